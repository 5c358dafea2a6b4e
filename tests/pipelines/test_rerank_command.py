"""`rankline rerank` end to end with the tiny Llama: parity orders in the run file, resume after an
interruption (and after a query cut short mid-write) from the journal it shares with batch-rerank,
settings guard, clear errors."""
from __future__ import annotations

import json

import pytest

from rankline.formats import read_run
from rankline.pipelines.cli import main
from rankline.rerankers.first import FirstReranker


@pytest.fixture()
def setup(fixtures_dir, tmp_path):
    parity = fixtures_dir / "first-parity"
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join((parity / "cases.jsonl").read_text(encoding="utf-8").split("\n")[:4]) + "\n", encoding="utf-8")
    expected = {d["qid"]: d["order"] for d in map(json.loads, (parity / "expected.jsonl").open())}
    args = ["rerank", "--candidates", str(cases), "--reranker", "first", "--model", str(parity / "tiny-llama"),
            "--parity", "rank_llm", "--device", "cpu", "--queries-per-task", "1"]
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

    def interrupt_after_two(self, lists):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append([c.query.qid for c in lists])
        return real(self, lists)

    monkeypatch.setattr(FirstReranker, "rerank_batch", interrupt_after_two)
    assert main(args + ["--out", str(out)]) == 130
    assert not out.exists()
    journal = tmp / "run.trec.partial.jsonl"
    assert [json.loads(line).get("qid") for line in journal.read_text().splitlines()] == [None, "s01-n1", "s02-n7"]
    with journal.open("a") as fh:  # a crash in the middle of writing the third query
        fh.write('{"qid": "s03-n20", "hits": [["x", 20.0], ["y", 19')

    calls.clear()
    monkeypatch.setattr(FirstReranker, "rerank_batch", lambda self, lists: (calls.append([c.query.qid for c in lists]), real(self, lists))[1])
    assert main(args + ["--out", str(out)]) == 0
    assert calls == [["s03-n20"], ["s04-n21"]]  # only the unfinished queries
    orders = _orders(out)
    assert list(orders) == ["s01-n1", "s02-n7", "s03-n20", "s04-n21"]
    assert all(orders[q] == expected[q] for q in orders)


def _interrupt_after(monkeypatch, n_calls):
    real, calls = FirstReranker.rerank_batch, []

    def interrupting(self, lists):
        if len(calls) == n_calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, lists)

    monkeypatch.setattr(FirstReranker, "rerank_batch", interrupting)


def test_journal_of_other_settings_is_refused(setup, monkeypatch, capsys):
    """A journal holding finished queries of other settings is never mixed in."""
    args, _, tmp = setup
    out = tmp / "run.trec"
    _interrupt_after(monkeypatch, 1)  # one query finished and journaled
    assert main(args + ["--out", str(out)]) == 130
    assert main(args + ["--window", "5", "--out", str(out)]) == 2
    assert "journal of a job with other inputs or settings" in capsys.readouterr().err


def test_missing_candidates_file_is_one_line_error(setup, capsys):
    args, _, tmp = setup
    args = list(args)
    args[args.index("--candidates") + 1] = str(tmp / "nope.jsonl")
    assert main(args + ["--out", str(tmp / "o.trec")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "flag"), [("rerank", "--window"), ("rerank", "--depth"), ("rerank", "--queries-per-task"),
                                               ("batch-rerank", "--workers"), ("batch-rerank", "--queries-per-task")])
def test_non_positive_counts_are_one_line_errors_and_write_nothing(setup, capsys, command, flag):
    args, _, tmp = setup
    args = [command, *args[1:]]
    out = tmp / "o.trec"
    assert main(args + [flag, "0", "--out", str(out)]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert list(tmp.iterdir()) == [tmp / "cases.jsonl"]


def test_an_option_the_reranker_does_not_take_is_one_line_error(setup, capsys):
    args, _, tmp = setup
    assert main(args + ["--layer", "3", "--out", str(tmp / "o.trec")]) == 2
    assert "--layer does not apply to --reranker first" in capsys.readouterr().err
    assert list(tmp.iterdir()) == [tmp / "cases.jsonl"]


@pytest.mark.parametrize(("command", "old", "value", "new", "answer"), [
    ("rerank", "--query-group", "0", "--queries-per-task", "--queries-per-task must be >= 1, got 0"),
    ("batch-rerank", "--run", "{tmp}/nope.jsonl", "--candidates", "nope.jsonl: no such file"),
])
def test_old_spellings_still_work_with_a_deprecation_line(setup, capsys, command, old, value, new, answer):
    """The old flag sets the new one (whose validation answers) after one warning line."""
    args, _, tmp = setup
    at = args.index("--candidates")
    args = [command, *args[1:at], *args[at + 2:]] + ([] if old == "--run" else ["--candidates", args[at + 1]])
    assert main(args + [old, value.format(tmp=tmp), "--out", str(tmp / "o.trec")]) == 2
    err = capsys.readouterr().err
    assert f"warning: {old} is deprecated; use {new}" in err and answer in err
