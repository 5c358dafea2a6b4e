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

HELP = "rerank candidate lists with an LLM reranker (FIRST, listwise generation, query likelihood, BlockRank) into a TREC run"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.pipelines.commands._reranker_options import add_reranker_arguments

    parser.add_argument("--candidates", required=True, type=Path,
                        help="requests jsonl, rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics, --corpus)")
    add_reranker_arguments(parser)
    parser.add_argument("--query-group", type=int, default=1,
                        help="queries reranked together, their windows sharing forward passes; progress is saved "
                             "after each group (default 1)")


def _partial_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.partial.json")


def _resume(partial: Path, sizes: dict[str, int]) -> set[str]:
    """The queries whose lines are all in `partial`; anything after them (a query cut short) is dropped."""
    from rankline.evaluation.io import atomic_write

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
    with atomic_write(partial) as out:
        out.write("".join(keep))
    return done


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from rankline.pipelines.candidates import read_candidates
    from rankline.pipelines.commands._reranker_options import check_positive, reranker_options
    from rankline.rerankers.models import load_causal_lm
    from rankline.rerankers.registry import build_reranker

    options = reranker_options(args)
    check_positive(args, ("query_group",))
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
        group = args.query_group
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
