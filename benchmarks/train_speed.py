"""Training speed: rankline's training step against a plain transformers + peft loop on the same batches.

Both sides train the same model with the same LoRA config (rank 16, alpha 32, dropout 0.05 on q/k/v/o), AdamW
and gradient clipping, on the same FIRST windows (N synthetic passages x W words, batch 1), with the loss that
both can compute: the language-modelling loss on the ranking (rankline's objective "lm"; the peer's
``model(..., labels=...)`` with the prompt masked). rankline's "combined" objective (LM + 10 x RankNet) is
timed too. Each side runs in its own process (peak memory = that process's peak RSS on the CPU, or
torch.cuda.max_memory_allocated on a GPU), with the same torch thread count; the sides take turns `--repeats`
times and each keeps its fastest run, so load from other processes on a shared machine does not decide the
ratio. Printed: ms per step, tokens/s, peak memory, and the ratio ours / peer (tokens/s: > 1 is faster; memory:
< 1 is smaller). With several --dtypes, each side's ms per step under each dtype (is bf16 autocast faster?). On a
CPU without bf16 instructions (AVX2 only) bf16 autocast is emulated: one SmolLM2 combined step took 133 s against
8.5 s in fp32, so `--dtypes bfloat16` there takes many minutes per side.

    python benchmarks/train_speed.py                                   # tiny random Llama (the fixture)
    python benchmarks/train_speed.py --model smollm2-135m-instruct --window 10 --words 60 --dtypes float32,bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RANKLINE_SHARED", ROOT.parent / "shared"))
TINY = SHARED / "fixtures" / "first-parity" / "tiny-llama"
WORDS = ("protein cell gene receptor expression cancer patients study effect treatment risk mutation level blood "
         "brain tissue mouse human response signal pathway clinical trial dose drug infection immune virus").split()


def make_examples(count: int, window: int, words: int, seed: int = 0):
    from rankline.formats import Candidates, Hit, Query
    from rankline.rerankers.training.data import RankingExample

    rng = random.Random(seed)
    out = []
    for q in range(count):
        hits = tuple(Hit(f"q{q}-d{i}", 0.0, " ".join(rng.choice(WORDS) for _ in range(words))) for i in range(window))
        order = list(range(window))
        rng.shuffle(order)
        grades = [0] * window
        grades[order[0]] = 1
        query = Query(f"q{q}", " ".join(rng.choice(WORDS) for _ in range(6)))
        out.append(RankingExample(Candidates(query, hits), tuple(order), tuple(grades)))
    return out


def peak_memory_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> dict:
    import torch

    from rankline.rerankers.training.trainer import TrainConfig, _autocast, _Method, build_model, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    objective = "lm" if args.side in ("ours-lm", "peer") else "combined"
    config = TrainConfig(method="first", model=args.model, objective=objective, dtype=args.dtype, progress=False)
    bf16 = resolve_dtype(args.dtype, device)
    examples = make_examples(args.warmup + args.steps, args.window, args.words)
    if args.side == "peer":  # plain transformers + peft: the model's own loss with the prompt masked
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rankline.rerankers.models import resolve_model_path
        from rankline.rerankers.training.first_loss import collate_first, encode_first, identifier_ids

        path = resolve_model_path(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        model.config.use_cache = False
        model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout,
                                                 target_modules=list(config.lora_targets), task_type="CAUSAL_LM"))
        model.train()
        ids = identifier_ids(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batches = [collate_first([encode_first(tokenizer, e, identifiers=ids)], pad_token_id=pad, identifiers=ids)
                   for e in examples]

        def step_loss(batch):
            batch = batch.to(device)
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    else:  # rankline's step: the trainer's model, encoding and objective (and its deterministic algorithms)
        torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
        model, tokenizer = build_model(config, device)
        method = _Method(config, tokenizer)
        batches = [method.batch([method.encode(i, e)], "cpu") for i, e in enumerate(examples)]

        def step_loss(batch):
            return method.loss(model, batch.to(device)).loss
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    tokens, elapsed = 0, 0.0
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        with _autocast(device, bf16):
            loss = step_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= args.warmup:
            elapsed += time.perf_counter() - start
            tokens += batch.num_tokens
    return {"side": args.side, "dtype": args.dtype, "ms_per_step": 1000 * elapsed / args.steps,
            "tokens_per_s": tokens / elapsed, "tokens_per_step": tokens / args.steps,
            "peak_mb": peak_memory_mb(device), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TINY), help="model (default: the tiny random Llama fixture)")
    parser.add_argument("--window", type=int, default=10, help="passages per FIRST window (default 10)")
    parser.add_argument("--words", type=int, default=60, help="words per passage (default 60)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16 (default float32)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch threads of every side (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, taken in turns; the fastest counts (default 1)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(worker(args)))
        return
    sides = ("peer", "ours-lm", "ours-combined")
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.repeats):  # in turns, dtypes included, so drifting load favours no side and no dtype
        for dtype in args.dtypes.split(","):
            for side in sides:
                cmd = [sys.executable, __file__, "--side", side, "--dtype", dtype, "--model", args.model,
                       "--window", str(args.window), "--words", str(args.words), "--steps", str(args.steps),
                       "--warmup", str(args.warmup)] + (["--device", args.device] if args.device else []) \
                    + (["--threads", str(args.threads)] if args.threads else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{side} {dtype} failed:\n{done.stderr[-3000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                if (side, dtype) not in best or row["ms_per_step"] < best[side, dtype]["ms_per_step"]:
                    best[side, dtype] = row
    rows = list(best.values())
    print(f"model {args.model}; FIRST windows of {args.window} passages x {args.words} words, batch 1, LoRA r16 on "
          f"q/k/v/o, AdamW; {args.steps} timed steps after {args.warmup} warm-up; torch threads {rows[0]['threads']}; "
          f"fastest of {args.repeats} runs per side")
    print(f"{'side':<28}{'dtype':<10}{'tokens/step':>12}{'ms/step':>10}{'tokens/s':>10}{'peak MB':>10}"
          f"{'tok/s ratio':>13}{'mem ratio':>11}")
    for dtype in args.dtypes.split(","):
        peer = next(r for r in rows if r["side"] == "peer" and r["dtype"] == dtype)
        for r in (r for r in rows if r["dtype"] == dtype):
            name = {"peer": "transformers + peft (LM)", "ours-lm": "rankline (objective lm)",
                    "ours-combined": "rankline (combined)"}[r["side"]]
            print(f"{name:<28}{dtype:<10}{r['tokens_per_step']:>12.0f}{r['ms_per_step']:>10.1f}"
                  f"{r['tokens_per_s']:>10.0f}{r['peak_mb']:>10.0f}{r['tokens_per_s'] / peer['tokens_per_s']:>13.2f}"
                  f"{r['peak_mb'] / peer['peak_mb']:>11.2f}")
    if len(args.dtypes.split(",")) > 1:
        for side in sides:
            times = {r["dtype"]: r["ms_per_step"] for r in rows if r["side"] == side}
            print(f"{side}: " + ", ".join(f"{d} {t:.0f} ms/step" for d, t in times.items()))


if __name__ == "__main__":
    main()
