"""A query whose text is not valid Unicode (a lone surrogate: a non-UTF-8 byte decoded with
surrogateescape, or half a UTF-16 pair) is a ValueError naming the query, in every retriever, instead
of a TypeError from the tokenizer or a UnicodeEncodeError from Lucene (issue 19)."""
from __future__ import annotations

import pytest

from rankline.formats import Query
from rankline.pipelines.cli import main
from rankline.retrieval import BuildOptions, build_index, open_retriever


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("text", ["apple \udcff", "\ud800 orchards"])  # surrogateescape'd byte, half a UTF-16 pair
def test_invalid_unicode_query_is_a_value_error_naming_it(tiny_encoder, corpus_a, tmp_path, method, text):
    out = tmp_path / "idx"
    build_index([corpus_a], out, BuildOptions(encoder=tiny_encoder, progress=False))
    retriever = open_retriever(out, method)
    with pytest.raises(ValueError, match="query 'q7': character .* lone surrogate"):
        retriever.search_batch([Query("ok", "apple"), Query("q7", text)], 3)
    assert retriever.search(Query("ok", "apple"), 3)  # the retriever still answers


def test_cli_search_with_an_undecodable_byte_is_one_line(tiny_encoder, corpus_a, tmp_path, capsys):
    out = tmp_path / "idx"
    build_index([corpus_a], out, BuildOptions(encoder=tiny_encoder, progress=False))
    query = b"apple \xff".decode("utf-8", "surrogateescape")  # how Python hands a non-UTF-8 argv byte over
    for method in ("dense", "bm25"):
        capsys.readouterr()
        assert main(["search", str(out), query, "--method", method]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("lone surrogate" in err[0] or "not valid UTF-8" in err[0])  # the CLI may refuse it first
