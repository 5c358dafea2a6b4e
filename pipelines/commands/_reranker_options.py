"""The reranker options that `rankline rerank` and `rankline batch-rerank` share: one definition of
the flags, their validation and how they map onto the registered rerankers' keywords."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# CLI dest -> reranker keyword; options left unset (None) keep the reranker's own default.
RERANKER_OPTIONS = ("window", "stride", "depth", "batch_size", "parity", "context_size",
                    "layer", "max_block_tokens", "calibrate")
_POSITIVE = ("window", "stride", "depth", "batch_size", "context_size", "max_block_tokens", "limit")


def add_reranker_arguments(parser: argparse.ArgumentParser) -> None:
    """--topics/--corpus, the reranker and its model, its options, --limit, --device/--dtype, --tag/--out."""
    from rankline.rerankers.models import DEFAULT_MODEL
    from rankline.rerankers.registry import RERANKERS

    parser.add_argument("--topics", type=Path, help="queries of a TREC run: qid<TAB>text or BEIR queries.jsonl")
    parser.add_argument("--corpus", type=Path, help="passages of a TREC run: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    parser.add_argument("--reranker", choices=sorted(RERANKERS), default="first", help="default: first")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"HF id or local folder (default: the embedded {DEFAULT_MODEL})")
    parser.add_argument("--window", type=int, help="passages per listwise window (default 20)")
    parser.add_argument("--stride", type=int, help="window stride (default 10)")
    parser.add_argument("--depth", type=int, help="rerank the top DEPTH candidates; the rest keep their order (default 100)")
    parser.add_argument("--parity", choices=["rank_llm"], help="FIRST: reproduce rank_llm 0.26.0 exactly")
    parser.add_argument("--batch-size", type=int, help="sequences per forward pass (default: the reranker's)")
    parser.add_argument("--context-size", type=int, help="FIRST: prompt token budget (default 4096)")
    parser.add_argument("--layer", type=int, help="BlockRank: decoder layer read for the scores (default: 20/32 of the depth)")
    parser.add_argument("--max-block-tokens", type=int, help="BlockRank: block size cap in tokens (default 384)")
    parser.add_argument("--calibrate", action="store_true", default=None,
                        help="BlockRank: subtract the scores of a content-free query (ICLR 2025 calibration)")
    parser.add_argument("--limit", type=int, help="rerank only the first LIMIT queries of the candidates")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--tag", default="rankline", help="run tag (last column)")
    parser.add_argument("--out", required=True, type=Path, help="output TREC run")


def check_positive(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    """Each of `flags` (argparse dests) that the user set must be >= 1."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reranker keywords the user set, after checking the flags' ranges."""
    check_positive(args, _POSITIVE)
    if not args.tag or any(c.isspace() for c in args.tag):
        raise ValueError(f"--tag must be one non-empty word, got {args.tag!r}")
    return {key: getattr(args, key) for key in RERANKER_OPTIONS if getattr(args, key) is not None}
