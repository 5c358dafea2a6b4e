"""The glue from qrels and runs to intervals, and `rankline eval --ci` end to end on DL 2019."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rankline.evaluation import ci, crc, intervals
from rankline.evaluation.label_dist import empirical_label_dist
from rankline.evaluation.metrics import evaluate
from rankline.formats import read_qrels, read_run


@pytest.fixture(scope="module")
def dl19(data_dir):
    base = data_dir / "trec-dl-2019"
    return {
        "qrels_path": base / "qrels.dl19-passage.txt",
        "run_path": base / "runs" / "ICT-BERT2",
        "baseline_path": base / "candidates" / "BM25.trec",
        "llm_path": data_dir / "llm-labels" / "dl2019" / "dl2019_test_4prompts_llama70b.txt",
    }


def test_split_queries():
    split = ci.split_queries(["a", "b", "c", "d"], ["a", "b", "c"], labelled_qids=["b", "a"])
    assert split.labelled == ("a", "b") and split.unlabelled == ("c", "d") and split.n_total == 4
    drawn = ci.split_queries(["a", "b", "c", "d"], ["a", "b", "c"], n_labelled=2, seed=3)
    assert set(drawn.labelled) <= {"a", "b", "c"} and len(drawn.unlabelled) == 2
    assert drawn == ci.split_queries(["a", "b", "c", "d"], ["a", "b", "c"], n_labelled=2, seed=3)
    with pytest.raises(ValueError, match="without human labels"):
        ci.split_queries(["a", "b"], ["a"], labelled_qids=["a", "b"])
    with pytest.raises(ValueError, match="2..3"):
        ci.split_queries(["a", "b", "c", "d"], ["a", "b", "c"], n_labelled=4)


def test_table_columns_equal_the_array_form_of_each_run_and_measure(dl19):
    """One pass over a runs x measures table gives each column's interval of the 1-d arrays."""
    human, llm = read_qrels(dl19["qrels_path"]), read_qrels(dl19["llm_path"])
    runs = [read_run(dl19["baseline_path"]), read_run(dl19["run_path"])]
    split = ci.split_queries(llm, human, n_labelled=12, seed=0)
    measures = ["nDCG@10", "RR(rel=2)@10"]
    builder = ci.TableBuilder(split, measures, human, [llm])
    for run in runs:
        builder.add(run)
    table = builder.table().paired(baseline=0)
    assert table.human.shape == (12, 3, 2) and table.llm.shape == (43, 3, 2)
    for method in ("ppi", "ppi++", "ppi-all", "human", "bootstrap"):
        got = table.interval(method, seed=4)
        for j, measure in enumerate(measures):
            y = [evaluate({q: human[q] for q in split.labelled}, run, [measure], complete=True)[measure] for run in runs]
            f = [evaluate(llm, run, [measure], complete=True)[measure] for run in runs]
            y = np.array([[v[q] for q in split.labelled] for v in y]).T
            f = np.array([[v.get(q, 0.0) for q in split.qids] for v in f]).T
            for column, (yc, fc) in enumerate([(y[:, 0], f[:, 0]), (y[:, 1], f[:, 1]), (y[:, 1] - y[:, 0], f[:, 1] - f[:, 0])]):
                want = ci.Table(yc, fc).interval(method, seed=4)
                one = got.column((column, j))
                assert (one.method, one.estimand, one.n_labelled, one.n_total) == (method, want.estimand, 12, 43)
                assert (one.estimate, one.lower, one.upper) == pytest.approx((want.estimate, want.lower, want.upper), rel=1e-12)
    want = intervals.ppi_mean(y[:, 1], f[:12, 1], f[12:, 1])
    assert ci.Table(y[:, 1], f[:, 1]).interval("ppi") == want  # a 1-column table is the interval function itself


def test_crc_table_equals_the_grid_of_each_run(dl19):
    human, llm = read_qrels(dl19["qrels_path"]), read_qrels(dl19["llm_path"])
    runs = [read_run(dl19["baseline_path"]), read_run(dl19["run_path"])]
    split = ci.split_queries(llm, human, n_labelled=20, seed=1)
    dist = empirical_label_dist([llm])
    builder = ci.TableBuilder(split, ["DCG@10", "DCG(dcg='exp-log2')@5"], human, [llm], label_dist=dist)
    for run in runs:
        builder.add(run)
    table = builder.table().paired(baseline=0)
    grid = [crc.dcg_grid(run, dist, split.qids, "DCG(dcg='exp-log2')@5") for run in runs]
    np.testing.assert_array_equal(table.grid[:, 1, 1], grid[1])
    np.testing.assert_array_equal(table.grid[:, 2, 1], crc.paired_grid(grid[1], grid[0]))
    got = table.interval("crc", seed=2).column((2, 1))
    y = table.human[:, 2, 1]
    want = intervals.to_all_queries(crc.crc_dataset(y, table.grid[:20, 2, 1], table.grid[20:, 2, 1], rng=2), y)
    assert (got.lower, got.upper) == pytest.approx((want.lower, want.upper), rel=1e-12)
    with pytest.raises(ValueError, match="DCG@k only"):
        ci.TableBuilder(split, ["nDCG@10"], human, [llm], label_dist=dist)
    with pytest.raises(ValueError, match="label distributions"):
        ci.Table(y, y).interval("crc")


def _run_cli(capsys, argv) -> tuple[int, str, str]:
    from rankline.pipelines.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["ppi", "ppi-all", "ppi++", "human", "bootstrap", "crc"])
def test_cli_ignores_the_human_labels_of_unlabelled_queries(dl19, tmp_path, capsys, method):
    human = read_qrels(dl19["qrels_path"])
    labelled = sorted(human)[:20]
    qids_file = tmp_path / "labelled.txt"
    qids_file.write_text("\n".join(labelled) + "\n")
    # Same labelled queries, every other human judgment flipped: the intervals must not move.
    corrupted = tmp_path / "corrupted.qrels"
    corrupted.write_text("".join(
        f"{q} 0 {d} {g if q in labelled else 3 - g}\n" for q, docs in human.items() for d, g in docs.items()
    ))
    reports = []
    for qrels in (dl19["qrels_path"], corrupted):
        code, out, err = _run_cli(capsys, [
            "eval", qrels, dl19["baseline_path"], dl19["run_path"], "-m", "DCG@10", "--llm-labels", dl19["llm_path"],
            "--ci", method, "--labelled-qids", qids_file, "--format", "json", "--test", "none",
        ])
        assert code == 0, err
        reports.append(json.loads(out))
    for name in ("BM25.trec", "ICT-BERT2"):
        assert reports[0]["runs"][name]["ci"] == reports[1]["runs"][name]["ci"]
        entry = reports[0]["runs"][name]["ci"]["DCG@10"]
        assert entry["method"] == method and entry["n_labelled"] == 20 and entry["n_total"] == 43
        assert entry["lower"] <= entry["upper"]
    assert reports[0]["runs"]["ICT-BERT2"]["ci_vs_baseline"] == reports[1]["runs"]["ICT-BERT2"]["ci_vs_baseline"]
    assert "ci_vs_baseline" not in reports[0]["runs"]["BM25.trec"]


def test_cli_paired_difference_is_the_difference_of_per_query_values(dl19, capsys):
    code, out, err = _run_cli(capsys, [
        "eval", dl19["qrels_path"], dl19["baseline_path"], dl19["run_path"], "-m", "nDCG@10",
        "--llm-labels", dl19["llm_path"], "--ci", "human", "--labelled", "43", "--format", "json", "--test", "none",
    ])
    assert code == 0, err
    report = json.loads(out)
    base, other = (report["runs"][n]["per_query"] for n in ("BM25.trec", "ICT-BERT2"))
    diff = np.array([other[q]["nDCG@10"] - base[q]["nDCG@10"] for q in sorted(base)])
    got = report["runs"]["ICT-BERT2"]["ci_vs_baseline"]["nDCG@10"]
    assert got["estimate"] == pytest.approx(diff.mean())
    assert got["upper"] - got["estimate"] == pytest.approx(intervals.human_t(diff).upper - diff.mean())


@pytest.mark.parametrize("extra, message", [
    (["--ci", "ppi", "--labelled", "5"], "needs --llm-labels"),
    (["--ci", "ppi", "--llm-labels", "LLM"], "needs --labelled-qids"),
    (["--labelled", "5"], "need --ci"),
    (["--ci", "crc", "--llm-labels", "LLM", "--labelled", "20"], "DCG@k only"),
])
def test_cli_errors_are_one_line(dl19, capsys, extra, message):
    extra = [str(dl19["llm_path"]) if e == "LLM" else e for e in extra]
    code, _, err = _run_cli(capsys, ["eval", dl19["qrels_path"], dl19["run_path"], "-m", "nDCG@10", *extra])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_reads_every_input_file_once(dl19, data_dir, tmp_path, capsys, monkeypatch):
    """qrels, runs, LLM label files, --label-dist and --labelled-qids: each opened exactly once."""
    import collections
    import sys

    from rankline.evaluation.label_dist import write_label_dist
    from rankline.formats import io

    llm_paths = [dl19["llm_path"], data_dir / "llm-labels" / "dl2019" / "dl2019_test_4prompts_flant5large.txt"]
    dist_path, qids_path = tmp_path / "labels.dist", tmp_path / "labelled.txt"
    write_label_dist(dist_path, empirical_label_dist([read_qrels(p) for p in llm_paths]))
    qids_path.write_text("\n".join(sorted(read_qrels(dl19["qrels_path"]))[:20]) + "\n")
    opened = collections.Counter()
    original = io.open_text

    def counting(path):
        opened[str(path)] += 1
        return original(path)

    for name, module in list(sys.modules.items()):  # every module that imported open_text by name
        if name.startswith("rankline") and getattr(module, "open_text", None) is original:
            monkeypatch.setattr(module, "open_text", counting)
    inputs = [dl19["qrels_path"], dl19["baseline_path"], dl19["run_path"], *llm_paths, dist_path, qids_path]
    code, _, err = _run_cli(capsys, [
        "eval", dl19["qrels_path"], dl19["baseline_path"], dl19["run_path"], "-m", "DCG@10", "--llm-labels", *llm_paths,
        "--ci", "crc", "--label-dist", dist_path, "--labelled-qids", qids_path, "--format", "json",
    ])
    assert code == 0, err
    assert opened == {str(p): 1 for p in inputs}


def test_llm_only_is_the_llm_mean_over_the_estimand_queries():
    """Hand-computed: labelled queries come first, so 'unlabelled' is the mean of the rest."""
    table = ci.Table(np.array([[1.0], [2.0]]), np.array([[1.0], [3.0], [5.0], [7.0]]))
    assert table.llm_only("all").tolist() == [4.0] and table.llm_only("unlabelled").tolist() == [6.0]
    with pytest.raises(ValueError, match="estimand"):
        table.llm_only("labelled")
