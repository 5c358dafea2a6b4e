"""`rankline label`: LLM relevance labels for the top of a run.

    rankline label --topics T --run RUN --corpus C --depth 10 --out LABELS [--dist-out FILE] [--argmax]
                   [--model smollm2-135m-instruct] [--batch-size 8] [--prompt FILE] [--cache FILE]

writes LABELS, qrels with the expected grade rounded to the nearest grade (the most probable grade
with --argmax), and the distributions file (default LABELS.dist: ``qid docid p0 p1 p2 p3``) that
`rankline eval --ci crc --label-dist` reads. Labels are cached per (model, prompt, qid, docid), so a
rerun, or a run after an interruption, recomputes nothing already labelled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "label the top documents of a run with an LLM (0-3 grade distributions, cached)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", required=True, help="queries: qid<TAB>text TSV or BEIR queries.jsonl")
    parser.add_argument("--run", required=True, help="TREC run whose top documents get labelled")
    parser.add_argument("--corpus", required=True, help="passages: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    parser.add_argument("--depth", type=int, default=10, help="label the top DEPTH documents of each query (default 10)")
    parser.add_argument("--out", required=True, type=Path, help="qrels file to write")
    parser.add_argument("--dist-out", type=Path, help="distributions file to write (default: OUT.dist)")
    parser.add_argument("--argmax", action="store_true", help="qrels hold the most probable grade, not the expected one")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="causal LM: the embedded default, a local folder or a Hugging Face id")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt", type=Path, help="prompt template file with {query} and {passage} (default: UMBRELA)")
    parser.add_argument("--max-passage-tokens", type=int, default=512, help="truncate passages to this many tokens")
    parser.add_argument("--cache", type=Path, help="label cache (default: $RANKLINE_CACHE/labels.sqlite)")


def run(args: argparse.Namespace) -> int:
    from rankline.formats import iter_corpus, ranked, read_run, read_topics, write_qrels
    from rankline.evaluation.label_dist import expected_grades, write_label_dist
    from rankline.evaluation.labeler import LabelCache, LabelPrompt, Pair, RelevanceLabeler, default_cache_path

    if args.depth < 1:
        raise ValueError(f"--depth must be >= 1, got {args.depth}")
    prompt = LabelPrompt(max_passage_tokens=args.max_passage_tokens,
                         **({"template": args.prompt.read_text(encoding="utf-8")} if args.prompt else {}))
    topics, run_ = read_topics(args.topics), read_run(args.run)
    missing = sorted(set(run_) - set(topics))
    if missing:
        raise ValueError(f"{args.run}: queries without a text in {args.topics}: {', '.join(missing[:5])}")
    wanted = {qid: [docid for docid, _ in ranked(docs)[: args.depth]] for qid, docs in run_.items()}
    needed = {docid for docids in wanted.values() for docid in docids}
    passages = {}
    for record in iter_corpus(args.corpus):
        if record.docid in needed:
            passages[record.docid] = f"{record.title} {record.text}".strip() if record.title else record.text
    absent = sorted(needed - set(passages))
    if absent:
        raise ValueError(f"{args.corpus}: {len(absent)} ranked documents are not in the corpus, e.g. {absent[0]}")
    pairs = [Pair(qid, topics[qid], docid, passages[docid]) for qid in sorted(wanted) for docid in wanted[qid]]

    from rankline.rerankers.models import load_causal_lm

    lm = load_causal_lm(args.model)
    labeler = RelevanceLabeler(lm.model, lm.tokenizer, model_name=args.model, prompt=prompt,
                               batch_size=args.batch_size, cache=LabelCache(args.cache or default_cache_path()))
    dists = labeler.label(pairs)
    write_label_dist(args.dist_out or args.out.with_name(args.out.name + ".dist"), dists)
    write_qrels(args.out, expected_grades(dists, argmax=args.argmax))
    return 0
