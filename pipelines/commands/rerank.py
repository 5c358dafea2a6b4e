"""`rankline rerank`: rerank first-stage candidates with an LLM reranker and write a TREC run.

    rankline rerank --candidates FILE [--topics TOPICS --corpus CORPUS] --reranker first|listwise|query-likelihood|blockrank
                    --model NAME_OR_PATH [--window 20 --stride 10 --depth 100] [--parity rank_llm] --out RUN.trec

FILE is a requests jsonl, a rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics and
--corpus). Finished queries are appended to a partial file beside the output (with a settings file
next to it); an interrupted job rerun with the same arguments resumes after them, and the output
appears, complete, only at the end (rename).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

HELP = "rerank candidate lists with an LLM reranker (FIRST, listwise generation, query likelihood, BlockRank) into a TREC run"

# CLI option -> reranker keyword; None-valued options are left to the reranker's default.
RERANKER_OPTIONS = {"window": "window", "stride": "stride", "depth": "depth", "batch_size": "batch_size",
                    "parity": "parity", "context_size": "context_size",
                    "layer": "layer", "max_block_tokens": "max_block_tokens", "calibrate": "calibrate"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.rerankers.models import DEFAULT_MODEL
    from rankline.rerankers.registry import RERANKERS

    parser.add_argument("--candidates", required=True, type=Path,
                        help="requests jsonl, rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics, --corpus)")
    parser.add_argument("--topics", type=Path, help="queries of a TREC run: qid<TAB>text or BEIR queries.jsonl")
    parser.add_argument("--corpus", type=Path, help="passages of a TREC run: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    parser.add_argument("--reranker", choices=sorted(RERANKERS), default="first", help="default: first")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"HF id or local folder (default: the embedded {DEFAULT_MODEL})")
    parser.add_argument("--window", type=int, help="passages per listwise window (default 20)")
    parser.add_argument("--stride", type=int, help="window stride (default 10)")
    parser.add_argument("--depth", type=int, help="rerank the top DEPTH candidates; the rest keep their order (default 100)")
    parser.add_argument("--parity", choices=["rank_llm"], help="FIRST: reproduce rank_llm 0.26.0 exactly")
    parser.add_argument("--batch-size", type=int, help="sequences per forward pass")
    parser.add_argument("--context-size", type=int, help="FIRST: prompt token budget (default 4096)")
    parser.add_argument("--layer", type=int, help="BlockRank: decoder layer read for the scores (default: 20/32 of the depth)")
    parser.add_argument("--max-block-tokens", type=int, help="BlockRank: block size cap in tokens (default 384)")
    parser.add_argument("--calibrate", action="store_true", default=None,
                        help="BlockRank: subtract the scores of a content-free query (ICLR 2025 calibration)")
    parser.add_argument("--query-group", type=int, default=1,
                        help="queries reranked together, their windows sharing forward passes; progress is saved "
                             "after each group (default 1)")
    parser.add_argument("--limit", type=int, help="rerank only the first LIMIT queries of the candidates file")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--tag", default="rankline", help="run tag (last column)")
    parser.add_argument("--out", required=True, type=Path, help="output TREC run")


def _partial_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.partial.json")


def _resume(partial: Path, sizes: dict[str, int]) -> set[str]:
    """The queries whose lines are all in `partial`; anything after them (a query cut short) is dropped."""
    if not partial.exists():
        return set()
    done: set[str] = set()
    keep: list[str] = []
    block: list[str] = []
    with open(partial, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            qid = line.split(" ", 1)[0]
            if block and block[0].split(" ", 1)[0] != qid:
                break  # a new query started before the previous one was complete
            block.append(line)
            if len(block) == sizes.get(qid, -1):
                done.add(qid)
                keep.extend(block)
                block = []
    tmp = partial.with_suffix(".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, partial)
    return done


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from rankline.pipelines.candidates import read_candidates
    from rankline.rerankers.models import load_causal_lm
    from rankline.rerankers.registry import build_reranker

    if not args.tag or any(c.isspace() for c in args.tag):
        raise ValueError(f"--tag must be one non-empty word, got {args.tag!r}")
    options: dict[str, Any] = {key: getattr(args, flag) for flag, key in RERANKER_OPTIONS.items()
                               if getattr(args, flag) is not None}
    lists = read_candidates(args.candidates, topics=args.topics, corpus=args.corpus)
    if args.limit is not None:
        lists = lists[: args.limit]
    qids = [c.query.qid for c in lists]
    if len(set(qids)) != len(qids):
        raise ValueError(f"{args.candidates}: a query appears more than once")

    partial, settings_path = _partial_paths(args.out)
    settings = {"candidates": str(args.candidates.resolve()), "reranker": args.reranker, "model": args.model,
                "options": options, "limit": args.limit, "dtype": args.dtype}
    if partial.exists():
        previous = json.loads(settings_path.read_text()) if settings_path.exists() else None
        if previous != settings:
            raise ValueError(f"{partial}: a partial run with other settings is in the way "
                             f"({previous} != {settings}); delete it or choose another --out")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings_path.write_text(json.dumps(settings, indent=1) + "\n")
    done = _resume(partial, {c.query.qid: len(c.hits) for c in lists})
    todo = [c for c in lists if c.query.qid not in done]

    if todo:
        lm = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
        reranker = build_reranker(args.reranker, lm, **options)
        group = max(1, args.query_group)
        with open(partial, "a", encoding="utf-8") as fh, \
                tqdm(total=len(lists), initial=len(done), desc=f"rerank {args.reranker}", unit="query") as bar:
            for i in range(0, len(todo), group):
                chunk = todo[i : i + group]
                results = reranker.rerank_batch([c.query for c in chunk], [c.hits for c in chunk])
                for cand, hits in zip(chunk, results):
                    fh.write("".join(f"{cand.query.qid} Q0 {h.docid} {rank} {h.score!r} {args.tag}\n"
                                     for rank, h in enumerate(hits, 1)))
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(chunk))
    os.replace(partial, args.out)
    settings_path.unlink(missing_ok=True)
    print(f"wrote {args.out}: {len(lists)} queries reranked by {args.reranker} ({args.model})")
    return 0
