"""`rankline label`: LLM relevance labels for the top candidates of each query.

    rankline label --candidates FILE [--topics T --corpus C] --top 10 --out LABELS [--dist-out FILE]
                   [--argmax] [--model smollm2-135m-instruct] [--device cuda] [--dtype bfloat16]
                   [--batch-size 8] [--prompt FILE] [--cache FILE]

reads the candidates as `rankline rerank` does (a requests jsonl, a rank_llm JSON, or a TREC run with
--topics and --corpus, ranked in trec_eval order) and writes LABELS, qrels with the expected grade
rounded to the nearest grade (the most probable grade with --argmax), and the distributions file
(default LABELS.dist: ``qid docid p0 p1 p2 p3``) that `rankline eval --ci crc --label-dist` reads.
Labels are cached per (model, prompt, qid, docid), so a rerun, or a run after an interruption,
recomputes nothing already labelled. `--run` and `--depth` are the old spellings of --candidates and
--top (`depth` now means only how many candidates a reranker receives).
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

from rankline.pipelines.commands._deprecated import add_deprecated_alias
from rankline.pipelines.commands._reranker_options import add_model_arguments

HELP = "label the top candidates of each query with an LLM (0-3 grade distributions, cached)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    candidates = parser.add_mutually_exclusive_group(required=True)  # one of the spellings is required
    candidates.add_argument("--candidates", type=Path,
                            help="requests jsonl, rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics, --corpus)")
    add_deprecated_alias(candidates, "--run", new="--candidates")
    parser.add_argument("--topics", type=Path, help="queries of a TREC run: qid<TAB>text or BEIR queries.jsonl")
    parser.add_argument("--corpus", type=Path, help="passages of a TREC run: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="label the top N candidates of each query (default 10)")
    add_deprecated_alias(parser, "--depth", new="--top")
    parser.add_argument("--out", required=True, type=Path, help="qrels file to write")
    parser.add_argument("--dist-out", type=Path, help="distributions file to write (default: OUT.dist)")
    parser.add_argument("--argmax", action="store_true", help="qrels hold the most probable grade, not the expected one")
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="sequences per forward pass: (query, passage) prompts labelled together (default 8)")
    parser.add_argument("--prompt", type=Path, help="prompt template file with {query} and {passage} (default: UMBRELA)")
    parser.add_argument("--max-passage-tokens", type=int, default=512, help="truncate passages to this many tokens")
    parser.add_argument("--cache", type=Path, help="label cache (default: $RANKLINE_CACHE/labels.sqlite)")


def run(args: argparse.Namespace) -> int:
    from rankline.evaluation.label_dist import expected_grades, write_label_dist
    from rankline.evaluation.labeler import LabelCache, LabelPrompt, Pair, RelevanceLabeler, default_cache_path
    from rankline.formats import check_output, open_text, read_candidates, write_qrels
    from rankline.rerankers.models import check_device, check_model_source

    # Every flag, both outputs, the model's whereabouts and the device are checked, and every input is
    # read, before the model loads.
    for flag in ("top", "batch_size", "max_passage_tokens"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    dist_out = args.dist_out or args.out.with_name(args.out.name + ".dist")
    check_output(args.out)
    check_output(dist_out)
    if dist_out.resolve() == args.out.resolve():
        raise ValueError(f"--dist-out {dist_out} is the --out file; give the distributions another name")
    check_model_source(args.model)
    check_device(args.device)
    template = {}
    if args.prompt:
        with open_text(args.prompt) as fh:
            template["template"] = fh.read()
    try:
        prompt = LabelPrompt(max_passage_tokens=args.max_passage_tokens, **template)
    except ValueError as exc:
        raise ValueError(f"{args.prompt}: {exc}" if args.prompt else str(exc)) from None
    lists = sorted(read_candidates(args.candidates, topics=args.topics, corpus=args.corpus), key=lambda c: c.query.qid)
    pairs = [Pair(c.query.qid, c.query.text, hit.docid, f"{hit.title} {hit.text}".strip() if hit.title else hit.text)
             for c in lists for hit in c.hits[: args.top]]
    cache_path = args.cache or default_cache_path()
    with _cache_errors(cache_path):
        cache = LabelCache(cache_path)

    from rankline.rerankers.models import load_causal_lm

    lm = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    labeler = RelevanceLabeler(lm.model, lm.tokenizer, model_name=args.model, prompt=prompt,
                               batch_size=args.batch_size, cache=cache)
    with _cache_errors(cache_path):
        dists = labeler.label(pairs)
    write_label_dist(dist_out, dists)
    write_qrels(args.out, expected_grades(dists, argmax=args.argmax))
    return 0


@contextlib.contextmanager
def _cache_errors(path: Path) -> Iterator[None]:
    """An unusable label cache (not a SQLite file, a locked or read-only one) as one line naming it."""
    import sqlite3

    try:
        yield
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: label cache: {exc} (give another --cache, or delete this one)") from None
