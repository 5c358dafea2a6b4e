"""read_run and read_qrels read a block of lines at a time and fall back to line-by-line reading for a
block they doubt. Whatever the block size, the result must equal pytrec_eval's parser (the reference)
on good files, and an error must name the same line and say the same thing as on a file of that one
line; the fast path must really be taken on clean input."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
import pytrec_eval

from rankline.formats import FormatError, read_qrels, read_run
from rankline.formats import files

BLOCK_SIZES = [1, 7, 64, 1000, 1 << 16]


def _write(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _big_run(n_queries: int = 60, depth: int = 50, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for q in range(n_queries):
        for rank, d in enumerate(rng.sample(range(10 * depth), depth), 1):
            sep = rng.choice([" ", "\t", "  ", " \t "])
            lines.append(sep.join([f"q{q}", "Q0", f"doc{d}", str(rank), repr(rng.uniform(-5, 5)), "tag"]))
    return lines


def _reference_run(text: str) -> dict:
    """pytrec_eval's parser on the non-blank lines (it refuses blank lines; read_run skips them)."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    return {q: dict(docs) for q, docs in pytrec_eval.parse_run(lines).items()}


def _reference_qrels(text: str) -> dict:
    lines = [line for line in text.split("\n") if line.strip()]
    return {q: dict(docs) for q, docs in pytrec_eval.parse_qrel(lines).items()}


@pytest.mark.parametrize("block", BLOCK_SIZES)
@pytest.mark.parametrize("name", ["r.trec", "r.trec.gz"])
def test_run_equals_pytrec_eval_at_every_block_size(tmp_path, monkeypatch, block, name):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    lines = _big_run()
    lines[70:70] = ["", "   ", "\t"]  # blank lines carry no record
    lines.append("q0 Q0 extra 51 1e308 tag")  # q0 again, after other queries: merged, as trec_eval does
    lines.append("q0 Q0 extra2 52 1e308 tag")  # finite scores whose sum is not
    lines.append("q1 Q0 z +3 0.5 t")  # ranks are anything int() takes
    lines.append("q1 Q0 y 1_0 -0.5 \x00")  # a field equal to the sentinel is just a field
    lines.append("q1 Q0 x \u0663 1 t")  # an Arabic-Indic digit is a decimal digit to int()
    text = "\n".join(lines)  # no newline after the last line
    path = _write(tmp_path / name, text)
    assert read_run(path) == _reference_run(text)


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_run_with_crlf_line_ends(tmp_path, monkeypatch, block):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    text = "\r\n".join(_big_run(5, 20)) + "\r\n"
    assert read_run(_write(tmp_path / "r.trec", text)) == _reference_run(text)


def test_clean_files_take_the_fast_path(tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("a clean block was read line by line")

    monkeypatch.setattr(files, "_add_run_lines", refuse)
    monkeypatch.setattr(files, "_add_qrels_lines", refuse)
    text = "\n".join(_big_run()) + "\n"
    assert read_run(_write(tmp_path / "r.trec.gz", text)) == _reference_run(text)
    qrels = "".join(f"q{i % 97}\t0 d{i} {i % 4}\n" for i in range(5000))
    assert read_qrels(_write(tmp_path / "q.txt", qrels)) == _reference_qrels(qrels)
    beir = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i % 97}\td{i}\t{i % 4}\n" for i in range(5000))
    expected = _reference_qrels(qrels)
    assert read_qrels(_write(tmp_path / "q.tsv", beir)) == expected


def _single_line_error(tmp_path: Path, reader, line: str) -> str:
    """What the reader says about `line` after one good line in a small file, without the location."""
    path = _write(tmp_path / "two.txt", "q0 Q0 first 1 1.0 t\n" + line + "\n")
    with pytest.raises(FormatError) as info:
        reader(path)
    return str(info.value).split(": ", 1)[1]


@pytest.mark.parametrize("block", [64, 1 << 16])
@pytest.mark.parametrize(("bad", "expected"), [
    ("q7 Q0 dx 1 0.5", "expected 6 fields"),
    ("q7 Q0 dx 1 0.5 t extra", "expected 6 fields"),
    ("q7 Q0 dx 1.5 0.5 t", "integer rank in field 4, got '1.5'"),
    ("q7 Q0 dx \u00b2 0.5 t", "integer rank"),  # a superscript two is a digit, not a decimal int() reads
    ("q7 Q0 dx " + "9" * 5000 + " 0.5 t", "integer rank"),  # more digits than int() reads
    ("q7 Q0 dx 1 high t", "numeric score"),
    ("q7 Q0 dx 1 inf t", "finite score"),
    ("q7 Q0 dx 1 -nan t", "finite score"),
    ("\ufeffq7 Q0 dx 1 0.5 t", "byte-order mark"),
])
def test_run_errors_name_the_line_in_any_block(tmp_path, monkeypatch, block, bad, expected):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    lines = _big_run()
    for at in (1, 1234, len(lines)):  # (a byte-order mark on line 1 is dropped, so not 0)
        text = "\n".join(lines[:at] + [bad] + lines[at:]) + "\n"
        with pytest.raises(FormatError, match=expected) as info:
            read_run(_write(tmp_path / "r.trec", text))
        assert info.value.line_no == at + 1
        assert str(info.value).split(": ", 1)[1] == _single_line_error(tmp_path, read_run, bad)


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_a_document_twice_is_found_across_blocks(tmp_path, monkeypatch, block):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    lines = _big_run()
    q, _, doc, *_ = lines[10].split()
    again = lines + [f"{q} Q0 {doc} 9 0.0 t"]  # far from the first, after other queries
    with pytest.raises(FormatError, match=f"document '{doc}' appears twice for query '{q}'") as info:
        read_run(_write(tmp_path / "r.trec", "\n".join(again) + "\n"))
    assert info.value.line_no == len(again)
    near = lines[:20] + [lines[10]] + lines[20:]  # in the same query's lines
    with pytest.raises(FormatError, match="appears twice") as info:
        read_run(_write(tmp_path / "r.trec", "\n".join(near) + "\n"))
    assert info.value.line_no == 21


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_qrels_equal_pytrec_eval_at_every_block_size(tmp_path, monkeypatch, block):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    rng = random.Random(1)
    lines = [f"q{q} 0 d{rng.randrange(10**6)} {rng.randrange(4)}" for q in range(40) for _ in range(30)]
    lines = list(dict.fromkeys(lines))  # pytrec_eval refuses a pair judged twice
    text = "\n\n" + "\n".join(lines) + "\nq3 0 late 2\nq3 0 decimal 1.\n"  # q3 again; a decimal grade
    expected = _reference_qrels(text.replace(" 1.\n", " 1\n"))
    assert read_qrels(_write(tmp_path / "q.txt", text)) == expected
    beir = "\n  \nquery-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, _, d, g in map(str.split, lines))
    assert read_qrels(_write(tmp_path / "q.tsv", beir)) == _reference_qrels("\n".join(lines))


@pytest.mark.parametrize("block", [64, 1 << 16])
@pytest.mark.parametrize("beir", [False, True])
def test_qrels_errors_name_the_line_in_any_block(tmp_path, monkeypatch, block, beir):
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    body = [f"q{i % 50}\td{i}\t{i % 3}" if beir else f"q{i % 50} 0 d{i} {i % 3}" for i in range(3000)]
    header = ["query-id\tcorpus-id\tscore"] if beir else []
    for bad, expected in [(body[5], "judged twice"), ("q1 0 d1" if not beir else "q1\td1", "fields"),
                          (body[7].replace(f"\t{7 % 3}", "\t1.5").replace(f" {7 % 3}", " 1.5"), "integer relevance"),
                          ("\ufeff" + body[2000].replace("d2000", "new"), "byte-order mark")]:
        lines = header + body[:2500] + [bad] + body[2500:]
        with pytest.raises(FormatError, match=expected) as info:
            read_qrels(_write(tmp_path / ("q.tsv" if beir else "q.txt"), "\n".join(lines) + "\n"))
        assert info.value.line_no == len(header) + 2501


@pytest.mark.parametrize("block", [64, 1 << 16])
def test_lines_short_and_long_by_one_field_in_one_block(tmp_path, monkeypatch, block):
    """Together they have the right number of fields, and read six at a time they would even parse;
    each line must have six."""
    monkeypatch.setattr(files, "_BLOCK_CHARS", block)
    lines = _big_run()
    text = "\n".join(lines[:300] + ["q7 Q0 dx 1 5", "q7 Q0 dy 2 3 4 t"] + lines[300:]) + "\n"
    with pytest.raises(FormatError, match="expected 6 fields 'qid Q0 docid rank score tag', got 5") as info:
        read_run(_write(tmp_path / "r.trec", text))
    assert info.value.line_no == 301
    qrels = "q1 0 d1 1\nq1 0 d2\nq1 0 d3 1 2\n"
    with pytest.raises(FormatError, match="expected 4 fields .*, got 3") as info:
        read_qrels(_write(tmp_path / "q.txt", qrels))
    assert info.value.line_no == 2
