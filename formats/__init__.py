"""rankline.formats: the records every stage shares (Query, Doc, Hit, Candidates), TREC/BEIR readers
and writers, candidate lists for reranking, atomic writes, cached folders, and trec_eval's ranking
order. The bottom of the layout: imports nothing else of rankline."""
from rankline.formats.candidates import read_candidates
from rankline.formats.files import (
    Qrels,
    Run,
    iter_corpus,
    read_qrels,
    read_run,
    read_topics,
    write_corpus,
    write_qrels,
    write_run,
    write_topics,
)
from rankline.formats.io import FormatError, atomic_write, cache_root, cached_folder, check_output, open_text
from rankline.formats.order import ranked, trec_order
from rankline.formats.records import Candidates, Doc, Hit, Query

__all__ = [
    "Candidates",
    "Doc",
    "FormatError",
    "Hit",
    "Qrels",
    "Query",
    "Run",
    "atomic_write",
    "cache_root",
    "cached_folder",
    "check_output",
    "iter_corpus",
    "open_text",
    "ranked",
    "read_candidates",
    "read_qrels",
    "read_run",
    "read_topics",
    "trec_order",
    "write_corpus",
    "write_qrels",
    "write_run",
    "write_topics",
]
