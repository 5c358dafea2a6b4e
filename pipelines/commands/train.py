"""`rankline train`: fine-tune a causal LM as a FIRST or BlockRank reranker (LoRA or full), resumably.

    rankline train --method first|blockrank --model NAME_OR_PATH --out DIR
                   (--candidates RUN [--topics T --corpus C] --qrels QRELS | --sharegpt FILE | --blockrank-jsonl FILE)
                   [--list-size 20 --negatives top|sample --negative-depth 100 --no-shuffle ...]
                   [--objective combined|ranking|lm --ranking-loss ranknet|listnet|lambdarank --grade-ties]
                   [--lora-rank 16 --lora-alpha 32 --lora-dropout 0.05 --lora-targets q_proj,k_proj,v_proj,o_proj | --full]
                   [--init-adapter DIR --skip-lists N]
                   [--lr --warmup-steps|--warmup-ratio --max-steps|--epochs --batch-size --grad-accum --max-grad-norm]
                   [--held-out 0.1 --held-out-disjoint --eval-every 50 --save-every --keep 2] [--workers N --gpus-per-worker G]

Training data: qrels positives + hard negatives from a first-stage run (any candidates file `rankline
rerank` reads; a TREC run with --topics and --corpus), cut into lists by the list options; or the
references' own formats (rank_llm ShareGPT JSON for FIRST, BlockRank JSONL, whose records are resampled to
--list-size only when it is given). Only training queries and training qrels belong here: no test query
and no test qrels may enter training or the held-out model selection.

Output: DIR/best (the held-out best: a LoRA adapter, or with --full a model folder), DIR/final, and
DIR/checkpoints/step-N. Rerun the same command after an interruption to continue from the last checkpoint
(same weights as an uninterrupted run); a checkpoint of other settings is refused. Where only an adapter
travelled (a new machine, the checkpoints left behind), --init-adapter DIR/best starts a new run from its
weights, with a fresh optimizer and schedule. Use the result with
`rankline rerank --model BASE --adapter DIR/best` (LoRA) or `--model DIR/best` (--full).
"""
from __future__ import annotations

import argparse
import sys

from rankline.pipelines.commands._signals import stopped_like_ctrl_c

HELP = "fine-tune a causal LM as a FIRST or BlockRank reranker (LoRA or full; resumable; Ray Train with --workers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.rerankers.models import DEFAULT_MODEL
    from rankline.rerankers.training.trainer import DEFAULT_TARGETS

    parser.add_argument("--method", choices=["first", "blockrank"], required=True, help="which reranker to train")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"base causal LM: a Hugging Face id or a local folder (default: the embedded {DEFAULT_MODEL})")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (best/, final/, checkpoints/)")

    data = parser.add_argument_group("training data (one source)")
    data.add_argument("--candidates", help="first-stage run: requests jsonl, rank_llm JSON, or a TREC run "
                                           "(with --topics and --corpus); needs --qrels")
    data.add_argument("--topics", help="queries of a TREC run (TSV / BEIR queries.jsonl)")
    data.add_argument("--corpus", help="passages (BEIR corpus.jsonl / TSV): texts of a TREC run, and of positives the run missed")
    data.add_argument("--qrels", help="training qrels (TREC / BEIR TSV): positives have grade > 0")
    data.add_argument("--sharegpt", metavar="FILE", help="rank_llm / FIRST ShareGPT JSON(L) (--method first)")
    data.add_argument("--blockrank-jsonl", metavar="FILE", help="BlockRank JSONL: query, documents, answer_ids")

    lists = parser.add_argument_group("lists (qrels + run; --list-size also resamples BlockRank JSONL)")
    lists.add_argument("--list-size", type=int, help="candidates per list (default 20; FIRST at most 26)")
    lists.add_argument("--max-positives", type=int, help="positives per list (default: all)")
    lists.add_argument("--negative-depth", type=int, default=100, help="negatives from the run's top N (default 100)")
    lists.add_argument("--negatives", choices=["top", "sample"], default="top",
                       help="the highest-ranked negatives, or a seeded sample of them (default top)")
    lists.add_argument("--no-shuffle", action="store_true",
                       help="show lists in first-stage order (default: seeded shuffle, so position cannot pass for relevance)")
    lists.add_argument("--skip-lists", type=int, default=0,
                       help="start this many lists into the seeded data stream: going on from --init-adapter with the "
                            "same data and --seed, the lists its run saw (its training.json step x global batch)")
    lists.add_argument("--examples-per-query", type=int, default=1, help="lists drawn per query (default 1)")

    obj = parser.add_argument_group("objective")
    obj.add_argument("--objective", choices=["combined", "ranking", "lm"], default="combined",
                     help="combined: FIRST L_LM + 10 x weighted RankNet (ListNet 0.1, LambdaRank 1), BlockRank L_LM + "
                          "0.1 x InfoNCE on the scoring-layer attention; ranking: the ranking term alone; lm: the LM "
                          "term alone (default combined)")
    obj.add_argument("--ranking-loss", choices=["ranknet", "listnet", "lambdarank"], default="ranknet",
                     help="FIRST's ranking term (default ranknet, weighted 1/(r_i + r_j))")
    obj.add_argument("--grade-ties", action="store_true",
                     help="FIRST's ranking term: candidates of equal qrels grade are ties (no pair; a negative meets "
                          "only positives) instead of ordered by the run, which teaches the first stage's order")
    obj.add_argument("--context-size", type=int, default=4096, help="FIRST: prompt + answer token budget (default 4096)")
    obj.add_argument("--max-block-tokens", type=int, default=384,
                     help="BlockRank: block size cap in tokens (default 384); rerank with the same value")

    model = parser.add_argument_group("model")
    model.add_argument("--full", action="store_true", help="fine-tune every weight instead of a LoRA adapter")
    model.add_argument("--lora-rank", type=int, help="LoRA rank r (default 16, or --init-adapter's)")
    model.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 32, or --init-adapter's)")
    model.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05, or --init-adapter's)")
    model.add_argument("--lora-targets",
                       help=f"comma-separated module names LoRA wraps (default {','.join(DEFAULT_TARGETS)}, "
                            "or --init-adapter's)")
    model.add_argument("--init-adapter", metavar="DIR",
                       help="start from this LoRA adapter (an earlier run's best/ or final/) instead of a fresh one, "
                            "to go on training weights a run left elsewhere; its LoRA settings are the defaults")
    model.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    model.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                       help="bfloat16: forward pass under bf16 autocast (weights, optimizer and losses stay fp32). "
                            "auto (default): bf16 on a GPU that supports it, float32 on the CPU, where bf16 autocast "
                            "measured slower (SmolLM2-135M LoRA FIRST step, 2 cores: see benchmarks/train_speed.py)")

    opt = parser.add_argument_group("optimisation (AdamW, cosine schedule with linear warm-up)")
    opt.add_argument("--lr", type=float, help="peak learning rate (default 1e-4 with LoRA, 2e-5 with --full)")
    opt.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    warm = opt.add_mutually_exclusive_group()
    warm.add_argument("--warmup-steps", type=int, help="linear warm-up steps")
    warm.add_argument("--warmup-ratio", type=float, help="warm-up as a share of the steps (default 0.05)")
    opt.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    opt.add_argument("--epochs", type=float, default=1.0, help="passes over the training lists (default 1)")
    opt.add_argument("--batch-size", type=int, default=1, help="lists per micro-batch (default 1)")
    opt.add_argument("--grad-accum", type=int, default=1,
                     help="micro-batches per worker and optimizer step; global batch = batch size x grad accum x workers")
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off; default 1.0)")
    opt.add_argument("--seed", type=int, default=0, help="seed of the lists, the split, the data order and the init")

    sel = parser.add_argument_group("model selection and checkpoints")
    sel.add_argument("--held-out", default="0.1",
                     help="training queries held out for model selection: a count (50) or a fraction (0.1, the "
                          "default); 0: none (best = last)")
    sel.add_argument("--held-out-disjoint", action="store_true",
                     help="also leave out of training every query that shares a positive passage with a held-out "
                          "query, so the held-out score cannot come from passages trained as positives")
    sel.add_argument("--eval-every", type=int, default=50, help="steps between held-out scores (default 50)")
    sel.add_argument("--save-every", type=int, help="steps between checkpoints (default: --eval-every)")
    sel.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")

    ray = parser.add_argument_group("beyond one process (Ray Train)")
    ray.add_argument("--workers", type=int, default=1, help="data-parallel workers on Ray Train (default 1: in this process)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default 0: CPU, gloo)")
    ray.add_argument("--address", help="an existing Ray cluster to join (default: a local one on 127.0.0.1)")


def _held_out(text: str) -> float | int:
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"--held-out must be a count (50) or a fraction (0.1), got {text!r}") from None
    if value < 0:
        raise ValueError(f"--held-out must be >= 0, got {text!r}")
    return value


def load_examples(args: argparse.Namespace) -> list:
    """The training examples the data flags name (exactly one source)."""
    from rankline.rerankers.training.data import ListOptions, read_blockrank_jsonl, read_sharegpt, read_training_examples, resample

    sources = [name for name in ("candidates", "sharegpt", "blockrank_jsonl") if getattr(args, name)]
    if len(sources) != 1:
        raise ValueError("give one source of training data: --candidates with --qrels, --sharegpt or --blockrank-jsonl"
                         + (f" (got {', '.join('--' + s.replace('_', '-') for s in sources)})" if sources else ""))
    list_size = args.list_size if args.list_size is not None else 20
    if args.method == "first" and list_size > 26:
        raise ValueError(f"--list-size: a FIRST window holds at most 26 passages, got {list_size}")
    options = ListOptions(list_size=list_size, max_positives=args.max_positives, negative_depth=args.negative_depth,
                          negatives=args.negatives, shuffle=not args.no_shuffle,
                          examples_per_query=args.examples_per_query, seed=args.seed)
    if args.candidates:
        if not args.qrels:
            raise ValueError("--candidates needs --qrels (the positives)")
        found = read_training_examples(args.candidates, qrels=args.qrels, topics=args.topics, corpus=args.corpus,
                                       options=options)
        if found.skipped:
            print(f"rankline train: {len(found.skipped)} queries give no list (e.g. {next(iter(found.skipped))}: "
                  f"{next(iter(found.skipped.values()))})", file=sys.stderr)
        if not found.examples:
            raise ValueError(f"{args.qrels}: no query of the qrels has a positive among the candidates of {args.candidates}")
        return found.examples
    if args.qrels:
        raise ValueError("--qrels goes with --candidates; --sharegpt and --blockrank-jsonl carry their own labels")
    if args.sharegpt:
        if args.method != "first":
            raise ValueError("--sharegpt holds FIRST (rank_llm) training records; BlockRank reads --blockrank-jsonl "
                             "or --candidates with --qrels")
        return read_sharegpt(args.sharegpt)
    examples = read_blockrank_jsonl(args.blockrank_jsonl)
    if args.list_size is not None:
        examples = [resample(e, options, k) for k, e in enumerate(examples)]
    return examples


def make_config(args: argparse.Namespace):
    from dataclasses import fields

    from rankline.rerankers.training.trainer import TrainConfig, adapter_lora_options

    # a LoRA option left out takes TrainConfig's default, or with --init-adapter the adapter's own setting
    lora = {f.name: f.default for f in fields(TrainConfig) if f.name.startswith("lora_")}
    if args.init_adapter:
        lora = adapter_lora_options(args.init_adapter)
    for name in ("lora_rank", "lora_alpha", "lora_dropout"):
        if getattr(args, name) is not None:
            lora[name] = getattr(args, name)
    if args.lora_targets is not None:
        lora["lora_targets"] = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        if not lora["lora_targets"]:
            raise ValueError("--lora-targets names no module")
    try:
        return TrainConfig(
            method=args.method, model=args.model, objective=args.objective, ranking_loss=args.ranking_loss,
            grade_ties=args.grade_ties,
            full=args.full, **lora, init_adapter=args.init_adapter, dtype=args.dtype, device=args.device, lr=args.lr,
            weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, warmup_ratio=args.warmup_ratio,
            max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
            max_grad_norm=args.max_grad_norm or None, held_out=_held_out(args.held_out),
            held_out_disjoint=args.held_out_disjoint, eval_every=args.eval_every,
            save_every=args.save_every, keep=args.keep, seed=args.seed, context_size=args.context_size,
            max_block_tokens=args.max_block_tokens, skip_lists=args.skip_lists,
            workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        )
    except ValueError as exc:
        import re

        raise ValueError(re.sub(r"^(\w+) (must|is|needs)", lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}",
                                str(exc))) from None


def run(args: argparse.Namespace) -> int:
    # `kill PID` or `kill -INT PID` stops a run (even one started with `nohup ... &`) once it has saved its last
    # finished step, so rerunning the command resumes from there
    with stopped_like_ctrl_c():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from rankline.rerankers.models import check_device, check_model_source
    from rankline.rerankers.training.trainer import train

    config = make_config(args)
    check_model_source(args.model)
    check_device(args.device)
    import importlib.util

    if not args.full and importlib.util.find_spec("peft") is None:
        raise ValueError("LoRA training needs peft: pip install 'rankline[train]' (or train with --full)")
    examples = load_examples(args)
    started_ray = False
    if config.workers > 1 or config.gpus_per_worker > 0:
        import ray

        if not ray.is_initialized():
            if args.address:
                ray.init(address=args.address)
            else:
                from rankline.pipelines.actors import start_local_ray

                start_local_ray()
            started_ray = True
    try:
        result = train(config, examples, args.out)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    best = result.best_scores
    where = f" (held-out nDCG@10 {best['ndcg@10']:.4f} at step {best['step']})" if best else ""
    if best and best["step"] == 0:
        start = "the --init-adapter weights" if config.init_adapter else "the untuned model"
        where += f": no trained step beat {start} on the held-out queries"
    how = f"--model {result.best}" if config.full else f"--model {config.model} --adapter {result.best}"
    print(f"rankline train: {result.steps} steps; best weights in {result.best}{where}; rerank with {how}",
          file=sys.stderr)
    return 0
