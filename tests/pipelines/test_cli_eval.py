"""`rankline eval`: published numbers, the JSON schema, csv/table output and one-line errors."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rankline.formats import read_qrels, read_run
from rankline.evaluation.metrics import evaluate, mean
from rankline.pipelines.cli import main

CANDIDATES = ("BM25.trec", "D_BERT_KD_TASB.trec", "SPLADE_P_P_ENSEMBLE_DISTIL.trec")


def _eval(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def dl19(data_dir: Path) -> Path:
    return data_dir / "trec-dl-2019"


def test_table_reproduces_published_ndcg_with_markers(capsys, dl19: Path) -> None:
    runs = [dl19 / "candidates" / name for name in CANDIDATES]
    code, out, _ = _eval(capsys, dl19 / "qrels.dl19-passage.txt", *runs, "-m", "nDCG@10", "RR(rel=2)@10")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run", "queries", "nDCG@10", "RR(rel=2)@10"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    # published nDCG@10 (shared data README): BM25 0.5058, TAS-B 0.7210, SPLADE++ 0.7308
    assert rows["BM25.trec"][:2] == ["43", "0.5058"]
    assert rows["D_BERT_KD_TASB.trec"][1] == "0.7210*" and rows["SPLADE_P_P_ENSEMBLE_DISTIL.trec"][1] == "0.7308*"
    assert lines[5].startswith("* p < 0.05 against BM25.trec (paired t-test, Holm-corrected over 2 runs)")


def test_json_schema_and_values(capsys, data_dir: Path) -> None:
    dl21 = data_dir / "trec-dl-2021"
    runs = [dl21 / "runs/p_bm25.gz", dl21 / "runs/mono_d3.gz"]
    code, out, _ = _eval(capsys, dl21 / "qrels-pass.txt", *runs, "-m", "nDCG@10", "AP", "--format", "json",
                         "--test", "randomization", "--permutations", "500")
    assert code == 0
    report = json.loads(out)
    assert report["measures"] == ["nDCG@10", "AP"] and report["baseline"] == "p_bm25"
    assert list(report["runs"]) == ["p_bm25", "mono_d3"]
    expected = evaluate(read_qrels(dl21 / "qrels-pass.txt"), read_run(runs[1]), ["nDCG@10", "AP"])
    entry = report["runs"]["mono_d3"]
    assert entry["mean"] == {m: pytest.approx(mean(v)) for m, v in expected.items()}
    assert len(entry["per_query"]) == 53
    assert all(entry["per_query"][q]["AP"] == pytest.approx(v) for q, v in expected["AP"].items())
    sig = entry["significance"]["nDCG@10"]
    assert set(sig) == {"p_value", "p_holm", "mean_difference", "n_queries"}
    assert sig["n_queries"] == 53 and sig["p_value"] == pytest.approx(1 / 501)
    assert "significance" not in report["runs"]["p_bm25"]


def test_csv_per_query_and_output_file(capsys, dl19: Path, tmp_path: Path) -> None:
    target = tmp_path / "out/scores.csv"
    code, out, _ = _eval(capsys, dl19 / "qrels.dl19-passage.txt", dl19 / "runs/ICT-CKNRM_B", "-m", "P@10",
                         "--per-query", "--format", "csv", "--out", target)
    assert code == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 44 and rows[-1]["qid"] == "all" and {r["run"] for r in rows} == {"ICT-CKNRM_B"}
    per_query = [float(r["P@10"]) for r in rows[:-1]]
    assert float(rows[-1]["P@10"]) == pytest.approx(sum(per_query) / 43)


@pytest.mark.parametrize("old", ["-o", "--output"])
def test_old_output_flags_still_write_with_a_deprecation_line(capsys, dl19: Path, tmp_path: Path, old: str) -> None:
    argv = [dl19 / "qrels.dl19-passage.txt", dl19 / "runs/ICT-CKNRM_B", "-m", "P@10", "--format", "csv"]
    assert _eval(capsys, *argv, "--out", tmp_path / "new.csv")[0] == 0
    code, out, err = _eval(capsys, *argv, old, tmp_path / "old.csv")
    assert code == 0 and out == ""
    assert err == f"rankline eval: warning: {old} is deprecated; use --out\n"
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "new.csv").read_text()
    assert old not in subprocess.run([sys.executable, "-m", "rankline.pipelines.cli", "eval", "--help"],
                                      capture_output=True, text=True).stdout.replace("--out", "")


def test_list_measures_prints_every_family_without_qrels_or_runs() -> None:
    from rankline.evaluation.measures import FAMILIES, parse_measure

    result = subprocess.run([sys.executable, "-m", "rankline.pipelines.cli", "eval", "--list-measures"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n\n")[1:]
    assert [b.split("(")[0].split("[")[0].split("@")[0] for b in blocks] == list(FAMILIES)
    for block, family in zip(blocks, FAMILIES.values()):
        written, description, cutoff, *params = block.strip().splitlines()
        assert description.strip() == family.description
        assert cutoff.split()[0] == "@k" and ("required" in cutoff) == family.cutoff_required
        assert [p.split()[0] for p in params] == [p.name for p in family.parameters()]
        example = written.split()[0].replace("[@k]", "").replace("@k", "@10")
        example = example.replace("rel=N", "rel=2").replace("'log2'|'exp-log2'", "'exp-log2'")
        assert parse_measure(example).name == family.name  # what the listing shows can be typed back


def test_complete_scores_missing_queries_as_zero(capsys, tmp_path: Path) -> None:
    (tmp_path / "qrels").write_text("q1 0 a 1\nq2 0 b 1\n")
    (tmp_path / "run.trec").write_text("q1 Q0 a 1 1.0 t\n")
    _, plain, _ = _eval(capsys, tmp_path / "qrels", tmp_path / "run.trec", "-m", "RR", "--format", "json")
    _, complete, _ = _eval(capsys, tmp_path / "qrels", tmp_path / "run.trec", "-m", "RR", "--format", "json", "--complete")
    assert json.loads(plain)["runs"]["run.trec"]["mean"] == {"RR": 1.0}
    assert json.loads(complete)["runs"]["run.trec"]["per_query"] == {"q1": {"RR": 1.0}, "q2": {"RR": 0.0}}


def test_table_per_query_rows(capsys, tmp_path: Path) -> None:
    (tmp_path / "qrels").write_text("q1 0 a 1\nq2 0 b 1\n")
    (tmp_path / "run.trec.gz").write_bytes(__import__("gzip").compress(b"q1 Q0 a 1 1.0 t\nq2 Q0 a 1 2.0 t\nq2 Q0 b 2 1.0 t\n"))
    code, out, _ = _eval(capsys, tmp_path / "qrels", tmp_path / "run.trec.gz", "-m", "RR", "--per-query")
    assert code == 0
    assert [line.split() for line in out.splitlines()[2:]] == [
        ["run.trec", "q1", "1.0000"], ["run.trec", "q2", "0.5000"], ["run.trec", "all", "2", "0.7500"]]


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        ({"run": "q1 Q0 a 1 1.0 t\n"}, ["missing.trec"], "missing.trec: no such file"),
        ({"run": "q1 Q0 a 1 1.0 t\n"}, ["-m", "nDGC@10"], "unknown measure 'nDGC@10'"),
        ({"run": "q1 Q0 a 1 1.0 t\nq1 Q0 b 2 oops t\n"}, [], "run:2: expected a numeric score"),
        ({"run": "q9 Q0 a 1 1.0 t\n"}, [], "no query in common with the qrels"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, tmp_path: Path, files: dict[str, str], extra: list[str], message: str) -> None:
    (tmp_path / "qrels").write_text("q1 0 a 1\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    runs = [tmp_path / "run"] if not extra or extra[0].startswith("-") else [tmp_path / extra.pop(0)]
    code, out, err = _eval(capsys, tmp_path / "qrels", *runs, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("rankline eval: error: ") and message in err


def test_duplicate_run_names_are_refused(capsys, tmp_path: Path) -> None:
    (tmp_path / "qrels").write_text("q1 0 a 1\n")
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run").write_text("q1 Q0 a 1 1.0 t\n")
    code, _, err = _eval(capsys, tmp_path / "qrels", tmp_path / "x/run", tmp_path / "y/run")
    assert code == 2 and "share the name 'run'" in err


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import rankline.pipelines.commands.evaluate\n"
        "assert 'numpy' not in sys.modules, 'eval command imports numpy at import time'\n"
        "from rankline.pipelines.cli import main\n"
        "try:\n    main(['eval', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'ray', 'pyserini', 'faiss'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--per-query" in result.stdout and "--complete" in result.stdout
