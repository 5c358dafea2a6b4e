"""Every failure of every command is one line on stderr naming the file (and line), exit code 2, with
nothing left behind (journals included), and every option is checked before any expensive work:
damaged inputs (gzip cut short, bytes that are not UTF-8, a folder, a .gz that is not gzip), a
document twice in a candidate list, an unusable --device, a missing model folder, reranker options
that cannot work, text arguments that are not UTF-8, outputs that cannot be written, and a job that
fails before finishing any query."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankline.pipelines.cli import main
from rankline.rerankers import models

CASES = [("q1", "what is a cat", [("d1", 3.0, "A cat is a small mammal."), ("d2", 2.0, "Markets fell."),
                                  ("d3", 1.0, "Water boils at 100 C.")]),
         ("q2", "boiling point of water", [("d3", 5.0, "Water boils at 100 C."), ("d1", 4.0, "A cat is a mammal.")])]


@pytest.fixture()
def work(tmp_path):
    """A folder holding a requests jsonl (`cases.jsonl`) and the rank_llm JSON of the same lists."""
    (tmp_path / "cases.jsonl").write_text("".join(
        json.dumps({"qid": q, "query": text, "candidates": [{"docid": d, "score": s, "text": t} for d, s, t in hits]}) + "\n"
        for q, text, hits in CASES))
    return tmp_path


@pytest.fixture()
def tiny(fixtures_dir) -> str:
    return str(fixtures_dir / "first-parity" / "tiny-llama")


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Fail the test if any command gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the command's arguments were checked")

    monkeypatch.setattr(models, "load_causal_lm", refuse)


def _run(capsys, argv) -> tuple[int, str]:
    """The exit code and stderr of a command (its stdout is kept in `_run.out`)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    _run.out = captured.out
    return code, captured.err.strip()


def _one_line_error(capsys, argv, *expected: str) -> str:
    code, err = _run(capsys, argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "warning:" not in line and "%|" not in line]  # not: progress bars
    assert len(lines) == 1 and lines[0].startswith(f"rankline {argv[0]}: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _rerank(work, tiny, *extra):
    return ["rerank", "--candidates", work / "cases.jsonl", "--reranker", "first", "--model", tiny, "--device", "cpu",
            "--out", work / "run.trec", *extra]


# ------------------------------------------------------------------------------- damaged input


def _truncated(path: Path, data: bytes) -> Path:
    packed = gzip.compress(data)
    path.write_bytes(packed[: len(packed) // 2])
    return path


def test_truncated_gzip_is_one_line_in_eval_rerank_and_label(work, tiny, capsys, data_dir):
    dl19 = data_dir / "trec-dl-2019"
    run = _truncated(work / "bm25.trec.gz", (dl19 / "candidates" / "BM25.trec").read_bytes())
    _one_line_error(capsys, ["eval", dl19 / "qrels.dl19-passage.txt", run], f"{run}: the gzip data is truncated or corrupt")
    cands = _truncated(work / "cands.jsonl.gz", (work / "cases.jsonl").read_bytes() * 50)
    _one_line_error(capsys, _rerank(work, tiny, "--candidates", cands), f"{cands}: the gzip data is truncated")
    _one_line_error(capsys, ["label", "--candidates", cands, "--out", work / "labels.qrels", "--model", tiny,
                             "--cache", work / "cache.sqlite"], f"{cands}: the gzip data is truncated")
    assert _files(work) == ["bm25.trec.gz", "cands.jsonl.gz", "cases.jsonl"]


def test_truncated_gzip_corpus_is_one_line_in_index(work, capsys):
    corpus = _truncated(work / "corpus.jsonl.gz", "".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"document number {i}"}) + "\n" for i in range(3000)).encode())
    _one_line_error(capsys, ["index", corpus, "--out", work / "idx", "--bm25"], f"{corpus}: the gzip data is truncated")


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("runs", None, "runs: is a folder; expected a file"),
    ("r.trec.gz", b"q1 Q0 d1 1 1.0 t\n", "r.trec.gz: expected gzip data (the name ends in .gz)"),
    ("r.bin", b"q1 Q0 d1 1 1.0 t\n\x00\x9c\xff\xfe", "r.bin:2: not UTF-8 text (byte 0x9c"),
])
def test_eval_names_a_run_that_is_no_text_file(tmp_path, capsys, name, data, expected):
    qrels, run = tmp_path / "q.txt", tmp_path / name
    qrels.write_text("q1 0 d1 1\n")
    run.mkdir() if data is None else run.write_bytes(data)
    _one_line_error(capsys, ["eval", qrels, run], expected)


def test_eval_reads_a_byte_order_mark_as_nothing(capsys, tmp_path, data_dir):
    """DL 2019 BM25: nDCG@10 0.5058 over 43 queries with a BOM in the run or in the qrels, as without one
    (kept in the first qid, it made a phantom query: 0.5053 and 0.5024, 44 queries with --complete)."""
    dl19 = data_dir / "trec-dl-2019"
    run, qrels = tmp_path / "BM25.trec", tmp_path / "qrels.txt"
    run.write_bytes(b"\xef\xbb\xbf" + (dl19 / "candidates" / "BM25.trec").read_bytes())
    qrels.write_bytes(b"\xef\xbb\xbf" + (dl19 / "qrels.dl19-passage.txt").read_bytes())
    for q, r in ((dl19 / "qrels.dl19-passage.txt", run), (qrels, dl19 / "candidates" / "BM25.trec"), (qrels, run)):
        code, err = _run(capsys, ["eval", q, r, "-m", "nDCG@10", "--complete", "--format", "json"])
        assert code == 0, err
        report = json.loads(_run.out)
        (entry,) = report["runs"].values()
        assert len(entry["per_query"]) == 43 and not any("\ufeff" in qid for qid in entry["per_query"])
        assert round(entry["mean"]["nDCG@10"], 4) == 0.5058


# ---------------------------------------------------------------------------------- duplicates


def test_rerank_refuses_a_document_twice_in_a_list_as_eval_does(work, tiny, capsys, no_model_loads):
    """It was collapsed silently (2 in, 1 out) where `rankline eval` refuses the same duplication."""
    lines = (work / "cases.jsonl").read_text().splitlines()
    obj = json.loads(lines[1])
    obj["candidates"].append(dict(obj["candidates"][0], score=0.5))
    (work / "dup.jsonl").write_text(lines[0] + "\n" + json.dumps(obj) + "\n")
    _one_line_error(capsys, _rerank(work, tiny, "--candidates", work / "dup.jsonl"),
                    f"{work / 'dup.jsonl'}:2: query 'q2': document 'd3' appears twice in its candidates")
    _one_line_error(capsys, ["label", "--candidates", work / "dup.jsonl", "--out", work / "l.qrels", "--model", tiny,
                             "--cache", work / "c.sqlite"], "dup.jsonl:2: query 'q2': document 'd3' appears twice")
    assert _files(work) == ["cases.jsonl", "dup.jsonl"]


# ------------------------------------------------------------------------ options before the work


@pytest.mark.parametrize(("extra", "expected"), [
    (["--device", "bogus"], "unknown device 'bogus': expected cpu, cuda, cuda:N or mps"),
    (["--window", "0"], "--window must be >= 1, got 0"),
    (["--window", "27", "--parity", "rank_llm"], "--window must be <= 26 with parity rank_llm (its passages are labelled A..Z), got 27"),
    (["--window", "10", "--stride", "15"], "stride 15 is larger than window 10: the candidates between two windows"),
    (["--stride", "25"], "stride 25 is larger than window 20"),
    (["--context-size", "0"], "--context-size must be >= 1, got 0"),
    (["--model", "{tmp}/no/such/model"], "{tmp}/no/such/model: no such model folder"),
    (["--model", "./missing-model"], "./missing-model: no such model folder"),
    (["--model", "{tmp}"], "not a model folder (it has no config.json)"),
    (["--reranker", "listwise", "--parity", "rank_llm"], "--parity does not apply to --reranker listwise"),
    (["--reranker", "blockrank", "--layer", "99"], "layer 99 does not exist"),
    (["--tag", "a\udcffb"], "argument --tag: not valid UTF-8 text (byte 0xff"),
])
def test_reranker_options_are_checked_before_any_input_is_read_or_model_loads(work, tiny, capsys, no_model_loads,
                                                                              extra, expected):
    """--candidates names a file that does not exist: the option's error comes first."""
    extra = [e.format(tmp=work) for e in extra]
    _one_line_error(capsys, _rerank(work, tiny, "--candidates", work / "missing.jsonl", *extra), expected.format(tmp=work))
    assert _files(work) == ["cases.jsonl"]


def test_device_cuda_without_cuda_is_one_line(work, tiny, capsys, no_model_loads):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _one_line_error(capsys, _rerank(work, tiny, "--device", "cuda"), "device 'cuda': CUDA is not available")
    _one_line_error(capsys, ["label", "--candidates", work / "cases.jsonl", "--out", work / "l.qrels", "--model", tiny,
                             "--device", "cuda:1", "--cache", work / "c.sqlite"], "device 'cuda:1': CUDA is not available")
    assert _files(work) == ["cases.jsonl"]


def test_search_checks_reranker_options_before_opening_the_index(tmp_path, capsys, no_model_loads):
    _one_line_error(capsys, ["search", tmp_path / "no-index", "fruit", "--reranker", "first", "--window", "10",
                             "--stride", "15"], "stride 15 is larger than window 10")


def test_search_refuses_a_query_that_is_not_utf8(tmp_path, capsys):
    """`rankline search DIR $'caf\\xff'`: Python hands the byte over as a lone surrogate."""
    _one_line_error(capsys, ["search", tmp_path / "no-index", "caf\udcff au lait"],
                    "argument QUERY: not valid UTF-8 text (byte 0xff at character 4")


def test_eval_names_the_output_it_cannot_write_before_reading_anything(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "report.json"
    _one_line_error(capsys, ["eval", tmp_path / "missing-qrels", tmp_path / "missing-run", "--out", out],
                    f"{out}: cannot write: {tmp_path / 'file'} is a file")


def test_a_write_refused_by_the_folder_names_the_target_not_its_temp_file(tmp_path, capsys, monkeypatch, data_dir):
    import tempfile

    def read_only_folder(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", str(Path(dir) / f"{prefix}x1y2{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    dl21 = data_dir / "trec-dl-2021"
    out = tmp_path / "report.json"
    line = _one_line_error(capsys, ["eval", dl21 / "qrels-pass.txt", dl21 / "runs" / "p_bm25.gz", "--out", out],
                           f"{out}: cannot write: Permission denied")
    assert ".tmp" not in line


# ------------------------------------------------------------------------------------ journals


def test_a_job_that_fails_before_any_query_leaves_no_journal_and_the_fix_runs(work, tiny, capsys):
    """A model folder that does not load: the job fails after the input was read, and the corrected
    command is not refused as 'a job with other inputs or settings'."""
    broken = work / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "vocab_size": "many"}')
    _one_line_error(capsys, _rerank(work, tiny, "--model", broken), f"model '{broken}': cannot load it")
    assert _files(work) == ["broken-model", "cases.jsonl"]
    code, err = _run(capsys, _rerank(work, tiny))
    assert code == 0, err
    assert _files(work) == ["broken-model", "cases.jsonl", "run.trec"]


def test_an_interrupt_before_any_query_leaves_nothing(work, tiny, capsys, monkeypatch):
    from rankline.rerankers.first import FirstReranker

    monkeypatch.setattr(FirstReranker, "rerank_batch", lambda self, lists: (_ for _ in ()).throw(KeyboardInterrupt))
    assert _run(capsys, _rerank(work, tiny))[0] == 130
    assert _files(work) == ["cases.jsonl"]


def test_a_journal_with_no_finished_query_never_blocks_a_job(work, tiny, capsys):
    journal = work / "run.trec.partial.jsonl"
    journal.write_text(json.dumps({"rankline_batch": 1, "fingerprint": "another job"}) + "\n")
    code, err = _run(capsys, _rerank(work, tiny))
    assert code == 0, err
    assert _files(work) == ["cases.jsonl", "run.trec"]


def test_rerank_refuses_to_write_over_its_own_input(work, tiny, capsys, no_model_loads):
    _one_line_error(capsys, _rerank(work, tiny, "--out", work / "cases.jsonl"), "is the --candidates file")
    assert _files(work) == ["cases.jsonl"]


def test_retrieve_checks_its_flags_and_output_before_opening_the_index(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    base = ["retrieve", tmp_path / "no-index", "--topics", tmp_path / "missing.tsv"]
    _one_line_error(capsys, [*base, "--out", tmp_path / "run.trec", "--tag", "two words"], "--tag must be one non-empty word")
    _one_line_error(capsys, [*base, "--out", tmp_path / "file" / "run.trec"], "cannot write")
    _one_line_error(capsys, [*base, "--out", tmp_path / "run.trec", "--batch-size", "0"], "--batch-size must be >= 1")


def test_an_unknown_device_for_the_query_encoder_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["search", tmp_path / "no-index", "fruit", "--device", "gpu0"], "unknown device 'gpu0'")
    _one_line_error(capsys, ["retrieve", tmp_path / "no-index", "--topics", tmp_path / "t.tsv", "--out",
                             tmp_path / "r.trec", "--device", "gpu0"], "unknown device 'gpu0'")
