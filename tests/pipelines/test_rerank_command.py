"""`rankline rerank` end to end with the tiny Llama: parity orders in the run file, resume after an
interruption (and after a query cut short mid-write) from the journal it shares with batch-rerank,
settings guard, clear errors."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from rankline.formats import read_run  # noqa: E402
from rankline.pipelines.cli import main  # noqa: E402
from rankline.rerankers.first import FirstReranker  # noqa: E402


@pytest.fixture()
def setup(fixtures_dir, tmp_path):
    parity = fixtures_dir / "first-parity"
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join((parity / "cases.jsonl").read_text(encoding="utf-8").split("\n")[:4]) + "\n", encoding="utf-8")
    expected = {d["qid"]: d["order"] for d in map(json.loads, (parity / "expected.jsonl").open())}
    args = ["rerank", "--candidates", str(cases), "--reranker", "first", "--model", str(parity / "tiny-llama"),
            "--parity", "rank_llm", "--device", "cpu"]
    return args, expected, tmp_path


def _orders(path):
    return {qid: [d for d, _ in sorted(docs.items(), key=lambda kv: -kv[1])] for qid, docs in read_run(path).items()}


def test_rerank_writes_rank_llm_orders(setup):
    args, expected, tmp = setup
    out = tmp / "run.trec"
    assert main(args + ["--out", str(out)]) == 0
    orders = _orders(out)
    assert list(orders) == ["s01-n1", "s02-n7", "s03-n20", "s04-n21"]
    assert all(orders[q] == expected[q] for q in orders)
    assert sorted(p.name for p in tmp.iterdir()) == ["cases.jsonl", "run.trec"]  # no partial files left


def test_interrupted_run_resumes(setup, monkeypatch):
    args, expected, tmp = setup
    out = tmp / "run.trec"
    real = FirstReranker.rerank_batch
    calls = []

    def interrupt_after_two(self, queries, hits):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append([q.qid for q in queries])
        return real(self, queries, hits)

    monkeypatch.setattr(FirstReranker, "rerank_batch", interrupt_after_two)
    assert main(args + ["--out", str(out)]) == 130
    assert not out.exists()
    journal = tmp / "run.trec.partial.jsonl"
    assert [json.loads(line).get("qid") for line in journal.read_text().splitlines()] == [None, "s01-n1", "s02-n7"]
    with journal.open("a") as fh:  # a crash in the middle of writing the third query
        fh.write('{"qid": "s03-n20", "hits": [["x", 20.0], ["y", 19')

    calls.clear()
    monkeypatch.setattr(FirstReranker, "rerank_batch", lambda self, q, h: (calls.append([x.qid for x in q]), real(self, q, h))[1])
    assert main(args + ["--out", str(out)]) == 0
    assert calls == [["s03-n20"], ["s04-n21"]]  # only the unfinished queries
    orders = _orders(out)
    assert list(orders) == ["s01-n1", "s02-n7", "s03-n20", "s04-n21"]
    assert all(orders[q] == expected[q] for q in orders)


def test_journal_of_other_settings_is_refused(setup, monkeypatch, capsys):
    args, _, tmp = setup
    out = tmp / "run.trec"
    monkeypatch.setattr(FirstReranker, "rerank_batch", lambda self, q, h: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(args + ["--out", str(out)]) == 130
    assert main(args + ["--window", "5", "--out", str(out)]) == 2
    assert "journal of a job with other inputs or settings" in capsys.readouterr().err


def test_missing_candidates_file_is_one_line_error(setup, capsys):
    args, _, tmp = setup
    args = list(args)
    args[args.index("--candidates") + 1] = str(tmp / "nope.jsonl")
    assert main(args + ["--out", str(tmp / "o.trec")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "flag"), [("rerank", "--window"), ("rerank", "--depth"),
                                               ("rerank", "--query-group"), ("batch-rerank", "--workers"), ("batch-rerank", "--queries-per-task")])
def test_non_positive_counts_are_one_line_errors_and_write_nothing(setup, capsys, command, flag):
    args, _, tmp = setup
    args = [command, *args[1:]]
    out = tmp / "o.trec"
    assert main(args + [flag, "0", "--out", str(out)]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert list(tmp.iterdir()) == [tmp / "cases.jsonl"]
