"""`rankline linearize`: make a linear-attention model from a softmax Llama (LoLCATs stage 1, attention transfer).

    rankline linearize --model M --out DIR --corpus CORPUS.jsonl [--window 64] [--decay none|fixed|learned]
                       [--steps 200 --lr 1e-2 --batch-size 2 --seq-len 256 --seed 0 --max-docs N]
                       [--save-every 25 --keep 2 --device cpu] [--init EARLIER_DIR]

Every attention layer becomes Hedgehog feature-mapped linear attention (on rankline.kernels.lightning_attention)
mixed with softmax attention over the last --window tokens (0: linear only), with lightning's per-head decay
(none, the fixed TransNormer schedule, or learned from it); only those new parameters train, each layer to
reproduce its softmax output on corpus text (every tenth document held out). DIR is a model folder:
`--model DIR` loads it everywhere a model goes. Stop it with Ctrl-C, `kill PID` or `kill -INT PID`: it keeps its
last finished step, and the same command continues from DIR/checkpoints; a finished DIR with the same settings is
left as it is. Stage 2 is `rankline train --model DIR ...`: a LoRA adapter on the linearised model's q/k/v/o
projections with what stage 1 learned frozen; rerank with `--model DIR --adapter RUN/best`. `--init EARLIER_DIR`
starts from an earlier linearisation of the same model instead of identity feature maps, e.g. a second transfer
on longer sequences (`--seq-len 1024`) after a first on short ones.
"""
from __future__ import annotations

import argparse

HELP = "linearise a Llama's attention (LoLCATs attention transfer onto lightning attention; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.rerankers.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"softmax Llama to linearise: a Hugging Face id or a local folder (default: the embedded "
                             f"{DEFAULT_MODEL})")
    parser.add_argument("--out", required=True, metavar="DIR", help="the linearised model folder to write")
    parser.add_argument("--corpus", required=True,
                        help="transfer text: a corpus file (BEIR corpus.jsonl / TSV), e.g. BEIR SciFact's corpus")
    parser.add_argument("--window", type=int, default=64, help="softmax sliding window in tokens (0: linear only; default 64)")
    parser.add_argument("--decay", choices=["none", "fixed", "learned"], default="none",
                        help="per-head decay of the linear part (default none)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate, AdamW with cosine decay (default 1e-2)")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per step (default 2)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order and the init (default 0)")
    parser.add_argument("--max-docs", type=int, help="read only the corpus' first N documents")
    parser.add_argument("--save-every", type=int, default=25, help="steps between checkpoints (default 25)")
    parser.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--init", metavar="EARLIER_DIR",
                        help="start from this linearisation of the same model (same --window and --decay), e.g. "
                             "a second transfer on longer sequences")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rankline.pipelines.commands._signals import stopped_like_ctrl_c
    from rankline.rerankers.linear.transfer import TransferConfig, transfer
    from rankline.rerankers.models import check_device, check_model_source

    config = TransferConfig(model=args.model, corpus=args.corpus, window=args.window, decay=args.decay,
                            steps=args.steps, lr=args.lr, batch_size=args.batch_size, seq_len=args.seq_len,
                            seed=args.seed, max_docs=args.max_docs, save_every=args.save_every, keep=args.keep,
                            device=args.device, init=args.init)
    try:
        config.check()
    except ValueError as exc:  # name the flag: "window must be ..." -> "--window must be ..."
        import re

        raise ValueError(re.sub(r"^(\w+) must", lambda m: f"--{m.group(1).replace('_', '-')} must", str(exc))) from None
    check_model_source(args.model)
    check_device(args.device)
    with stopped_like_ctrl_c():
        out = transfer(config, Path(args.out))
    print(f"rankline linearize: {out} (load it with --model {out})")
    return 0
