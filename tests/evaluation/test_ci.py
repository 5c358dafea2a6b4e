"""The glue from qrels and runs to intervals, and `rankline eval --ci` end to end on DL 2019."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rankline.evaluation import ci, intervals
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


def test_ppi_from_files_equals_the_array_form(dl19):
    human, llm, run = read_qrels(dl19["qrels_path"]), read_qrels(dl19["llm_path"]), read_run(dl19["run_path"])
    split = ci.split_queries(llm, human, n_labelled=12, seed=0)
    got = ci.confidence_interval("ppi", human_qrels=human, llm_labels=[llm], run=run, measure="nDCG@10", split=split)
    y = ci.per_query_values(human, run, "nDCG@10", split.labelled)
    f = ci.llm_values([llm], run, "nDCG@10", split.qids)
    want = intervals.ppi_mean(y, f[:12], f[12:])
    assert (got.lower, got.upper) == (want.lower, want.upper)
    assert got.n_labelled == 12 and got.n_total == 43


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
