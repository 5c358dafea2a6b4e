"""Reranking speed of the LLM rerankers on TREC DL 2019 BM25 candidates, one model, one process, one run.

    python benchmarks/rerank_speed.py [--queries 5] [--model smollm2-135m-instruct] [--dtype bfloat16]
                                      [--depth 100 --window 20 --stride 10]
                                      [--rerankers first listwise query-likelihood] [--sizes 20 100 500]
                                      [--full-max 100] [--first-max 100] [--json FILE] [--threads N]
                                      [--linear fresh|DIR [--linear-sizes 100 300 1000] [--linear-queries 2]
                                       [--passage-words 40] [--linear-window 64] [--linear-decay none]]

Part 1 reranks the BM25 top-DEPTH of the first QUERIES queries (each reranker receives DEPTH candidates)
with each of --rerankers (same model, same candidates) and prints, per reranker, wall-clock and
process-CPU seconds per query and the ratios to FIRST (issue 4's goal: listwise generation / FIRST >= 5),
then the time inside the model's forward calls split into prefill and decode steps; listwise's whole
time over its prefills alone is the ceiling of that ratio, since FIRST is one prefill of nearly the same
prompt per window.

Part 2 (skipped with --sizes none) times BlockRank at each of --sizes passages (candidate lists
repeated to reach sizes above 100) against its two peers on the same lists:
- full attention: the *same* BlockRank prompt as one ordinary causal sequence (the model's own
  attention, positions 0..T-1) through the same layers (0..the scoring layer; the rest never run), so
  the ratio isolates the attention structure (up to --full-max passages);
- FIRST: sliding windows (window 20, stride 10) over the same passages (up to --first-max).
Issue 8's goals: full / BlockRank >= 3 at 100 passages; BlockRank time(500) / time(100) <= 6.

Part 3 (only with --linear) is FIRST over a whole list in one window on a linearised model (issue 16), on
SciFact passages (../shared/data/beir/scifact: the first max(--linear-sizes) corpus documents, title and text cut
to --passage-words words, in a seeded order per query; the first --linear-queries queries of queries.jsonl):
- one window over 100 candidates (--window 100: one forward pass per query) on the linearised model against
  sliding-window FIRST (window 20, stride 10: nine windows) on the softmax model, same candidates (issue 16's
  goal: >= 3x faster on this CPU);
- the linearised one-window FIRST at each of --linear-sizes candidates (goal: time(1000) / time(100) <= 11), with
  the peak resident memory each call adds to what the process held before it (Linux: the high-water mark is reset
  through /proc/self/clear_refs before each call) and that increase per prompt token. Memory is measured in a
  pass of its own after the timed ones (one call per row, first query): glibc is told (mallopt) to serve every
  block above 64 KiB by mmap and to give it back when freed, since otherwise memory freed by an earlier call is
  reused unseen and the peaks depend on the order of the calls; the page faults that costs (~50% more CPU time
  on the linearised model) would distort the times, hence the separate pass. Each model runs once untimed before
  its measured calls (its first call there held ~90 MiB more: lasting allocations, not the call's peak).
"calls" counts the model's forward calls per query: nine windows for sliding FIRST over 100; one pass for a
window over the whole list, read in chunks of rerankers.first.LINEAR_PREFILL_CHUNK tokens on a linearised model.
--linear fresh linearises --model in memory with the initial feature maps (identity Hedgehog maps, mixing factor
1/2): speed does not depend on trained feature maps, so no attention transfer is needed; --linear DIR loads a
`rankline linearize` folder. Prompts are not cut (the context budget is set above the longest prompt), so tokens
grow with the candidates; the softmax side keeps its model's 8k context (a 20-passage window fits).

CPU seconds (time.process_time) are the fairer number on a shared machine: other processes slow the
wall clock but not this process's CPU time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

SHARED = Path(os.environ.get("RANKLINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CANDIDATES = SHARED / "data" / "trec-dl-2019" / "candidates" / "BM25.top100.json.gz"
SCIFACT = SHARED / "data" / "beir" / "scifact"
BASELINE = "first"


class _Stop(Exception):
    pass


def full_attention_forward(model: Any, input_ids: list[int], layer: int) -> None:
    """An ordinary causal forward over `input_ids` through decoder layers 0..layer (the rest never run)."""
    import torch

    layers = model.base_model.layers
    after = layers[layer + 1] if layer + 1 < len(layers) else model.base_model.norm

    def stop(*_: Any) -> None:
        raise _Stop

    handle = after.register_forward_pre_hook(stop)
    try:
        with torch.inference_mode():
            model.base_model(input_ids=torch.tensor([input_ids], device=model.device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()


class ForwardClock:
    """Wall seconds inside the model's forward calls, split into prefill (more than one new token per
    row) and decode (one new token: a step of `generate`), while the context is open."""

    def __init__(self, model: Any):
        self.model = model
        self.seconds = {"prefill": 0.0, "decode": 0.0}
        self.calls = {"prefill": 0, "decode": 0}
        self.tokens = 0  # token positions read by all calls

    def __enter__(self) -> "ForwardClock":
        def before(_: Any, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._phase = "decode" if ids is not None and ids.shape[-1] == 1 else "prefill"
            self.tokens += 0 if ids is None else ids.numel()
            self._start = time.perf_counter()

        def after(*_: Any) -> None:
            self.seconds[self._phase] += time.perf_counter() - self._start
            self.calls[self._phase] += 1

        self._handles = [self.model.register_forward_pre_hook(before, with_kwargs=True),
                         self.model.register_forward_hook(after)]
        return self

    def __exit__(self, *_: Any) -> None:
        for handle in self._handles:
            handle.remove()


def repeat_to(hits: tuple, n: int) -> tuple:
    return (hits * math.ceil(n / len(hits)))[:n]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def compare_rerankers(args: argparse.Namespace, lm: Any, lists: list) -> dict:
    from rankline.rerankers import build_reranker, rerank_head, reranker_options

    wanted = {"window": args.window, "stride": args.stride, "batch_size": args.batch_size}
    rows = {}
    for name in args.rerankers:
        reranker = build_reranker(name, lm, **{k: v for k, v in wanted.items() if k in reranker_options(name)})
        with ForwardClock(lm.model) as clock:
            times = [timed(lambda: rerank_head(reranker, [cand], args.depth)) for cand in lists]
        rows[name] = {"wall": statistics.mean(t[0] for t in times), "cpu": statistics.mean(t[1] for t in times),
                      **{f"{phase} s": clock.seconds[phase] / len(lists) for phase in clock.seconds},
                      **{f"{phase} calls": clock.calls[phase] / len(lists) for phase in clock.calls}}
        print(f"  {name}: {rows[name]['wall']:.1f} s/query wall, {rows[name]['cpu']:.1f} s/query CPU", file=sys.stderr)
    base = rows.get(BASELINE, {})
    print(f"\nPart 1: {len(lists)} DL 2019 BM25 queries, top {args.depth}, window {args.window}, stride {args.stride}")
    print(f"{'reranker':<18} {'wall s/query':>12} {'CPU s/query':>12} {'wall / FIRST':>13} {'CPU / FIRST':>12}")
    for name, r in rows.items():
        print(f"{name:<18} {r['wall']:>12.2f} {r['cpu']:>12.2f} {ratio(r['wall'], base.get('wall')):>13} "
              f"{ratio(r['cpu'], base.get('cpu')):>12}")
    print("\nInside the model's forward calls, wall seconds per query:")
    print(f"{'reranker':<18} {'prefill s':>10} {'calls':>6} {'decode s':>9} {'steps':>6} {'ms/step':>8} {'outside s':>10}")
    for name, r in rows.items():
        step = 1000 * r["decode s"] / r["decode calls"] if r["decode calls"] else float("nan")
        print(f"{name:<18} {r['prefill s']:>10.2f} {r['prefill calls']:>6.1f} {r['decode s']:>9.2f} "
              f"{r['decode calls']:>6.1f} {step:>8.1f} {r['wall'] - r['prefill s'] - r['decode s']:>10.2f}")
    listwise = rows.get("listwise")
    if listwise and listwise["prefill s"]:
        # FIRST's work is one prefill of (nearly) the same prompt per window: listwise's own prefills are the
        # least FIRST can cost, so this is the largest listwise/FIRST ratio any FIRST implementation can reach.
        print(f"ceiling on listwise / FIRST (listwise's whole time / its prefills alone): "
              f"{listwise['wall'] / listwise['prefill s']:.2f}x")
    return rows


def blockrank_sweep(args: argparse.Namespace, lm: Any, lists: list) -> list[dict]:
    from rankline.formats import Candidates
    from rankline.rerankers import build_reranker

    blockrank = build_reranker("blockrank", lm)
    layer = blockrank.options.layer
    first = build_reranker("first", lm, window=20, stride=10, batch_size=args.batch_size)
    rows = []
    for n in args.sizes:
        per: dict[str, list[tuple[float, float]]] = {"blockrank": [], "full": [], "first": []}
        tokens = []
        for cand in lists:
            passages = Candidates(cand.query, repeat_to(cand.hits, n))
            prompt = blockrank.prompt(cand.query.text, passages.hits)
            tokens.append(sum(prompt.lengths))
            per["blockrank"].append(timed(lambda: blockrank.rerank_batch([passages])))
            if n <= args.full_max:
                per["full"].append(timed(lambda: full_attention_forward(lm.model, prompt.input_ids(), layer)))
            if n <= args.first_max:
                per["first"].append(timed(lambda: first.rerank_batch([passages])))
            print(f"  n={n} {cand.query.qid}: " + ", ".join(f"{k} {v[-1][1]:.1f} CPU s" for k, v in per.items() if v),
                  file=sys.stderr)
        row: dict[str, Any] = {"passages": n, "tokens": statistics.mean(tokens)}
        for key, times in per.items():
            row[key] = {clock: statistics.mean(t[i] for t in times) if times else None
                        for i, clock in enumerate(("wall", "cpu"))}
        rows.append(row)

    print(f"\nPart 2: BlockRank (layer {layer}) vs full causal attention (same prompt, same layers) vs FIRST, "
          f"{len(lists)} queries; seconds per query")
    print(f"{'passages':>8} {'tokens':>7} {'BlockRank':>16} {'full attn':>16} {'FIRST':>16} "
          f"{'full/BR':>14} {'FIRST/BR':>14}")
    print(f"{'':>8} {'':>7} {'wall':>7} {'CPU':>8} {'wall':>7} {'CPU':>8} {'wall':>7} {'CPU':>8} "
          f"{'wall':>6} {'CPU':>7} {'wall':>6} {'CPU':>7}")

    def cell(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    for r in rows:
        br, full, first = r["blockrank"], r["full"], r["first"]
        print(f"{r['passages']:>8} {r['tokens']:>7.0f} {cell(br['wall']):>7} {cell(br['cpu']):>8} "
              f"{cell(full['wall']):>7} {cell(full['cpu']):>8} {cell(first['wall']):>7} {cell(first['cpu']):>8} "
              f"{ratio(full['wall'], br['wall']):>6} {ratio(full['cpu'], br['cpu']):>7} "
              f"{ratio(first['wall'], br['wall']):>6} {ratio(first['cpu'], br['cpu']):>7}")
    by_n = {r["passages"]: r["blockrank"] for r in rows}
    if 100 in by_n and 500 in by_n:
        print(f"BlockRank time(500) / time(100): {ratio(by_n[500]['wall'], by_n[100]['wall'])} wall, "
              f"{ratio(by_n[500]['cpu'], by_n[100]['cpu'])} CPU (goal <= 6)")
    return rows


def memory_kib() -> dict[str, int]:
    """This process's resident memory now and its high-water mark (Linux /proc, KiB)."""
    import re

    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM")}


def timed_peak(fn: Callable[[], Any]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak MiB above the resident memory before the call) of one call."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = memory_kib()["VmRSS"]
    wall, cpu = timed(fn)
    return wall, cpu, (memory_kib()["VmHWM"] - before) / 1024


def exact_peaks() -> None:
    """From now on glibc serves every block above 64 KiB by mmap and unmaps it when freed, so the resident
    high-water mark after a call is what that call held (module docstring: CPU time then pays page faults)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(-3, 65536) != 1 or libc.mallopt(-1, 131072) != 1:  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        raise SystemExit("mallopt failed: cannot measure peak memory on this C library")
    libc.malloc_trim(0)


def scifact_lists(n_queries: int, max_n: int, words: int, seed: int = 0) -> list:
    """The first `n_queries` SciFact queries, each with the first `max_n` corpus documents (cut to `words` words)
    in its own seeded order."""
    import random

    from rankline.formats import Candidates, Hit, Query, iter_corpus

    docs = []
    for doc in iter_corpus(SCIFACT / "corpus.jsonl"):
        if len(docs) == max_n:
            break
        docs.append(Hit(doc.docid, 0.0, " ".join(f"{doc.title}. {doc.text}".split()[:words])))
    if len(docs) < max_n:
        raise SystemExit(f"{SCIFACT / 'corpus.jsonl'}: {len(docs)} documents, fewer than {max_n}")
    lists = []
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        for q in range(n_queries):
            row = json.loads(fh.readline())
            hits = list(docs)
            random.Random(seed + q).shuffle(hits)
            ranked = tuple(Hit(h.docid, float(max_n - i), h.text) for i, h in enumerate(hits))
            lists.append(Candidates(Query(row["_id"], row["text"]), ranked))
    return lists


def load_linear(args: argparse.Namespace, dtype: Any) -> Any:
    """The linearised model of --linear (module docstring)."""
    from rankline.rerankers.models import load_causal_lm

    if args.linear != "fresh":
        return load_causal_lm(args.linear, dtype=dtype)
    from rankline.rerankers.linear.llama import LinearSettings, linearise

    lm = load_causal_lm(args.model, dtype=dtype)
    linearise(lm.model, LinearSettings(window=args.linear_window, decay=args.linear_decay))
    return lm


def linear_sweep(args: argparse.Namespace, softmax: Any) -> dict:
    from rankline.formats import Candidates
    from rankline.rerankers import build_reranker, rerank_head

    linear = load_linear(args, softmax.model.dtype)
    lists = scifact_lists(args.linear_queries, max(args.linear_sizes), args.passage_words)
    big = 1 << 22  # no cut: every prompt fits
    sliding = build_reranker("first", softmax, window=20, stride=10, batch_size=1)
    one = {n: build_reranker("first", linear, window=n, batch_size=1, context_size=big) for n in args.linear_sizes}
    warm = [Candidates(lists[0].query, lists[0].hits[:10])]  # first calls pay one-time costs: not timed
    rerank_head(sliding, warm, 10)
    rerank_head(build_reranker("first", linear, window=10, batch_size=1, context_size=big), warm, 10)

    def measure(reranker: Any, cand: Any, n: int, clock: ForwardClock) -> dict:
        head = Candidates(cand.query, cand.hits[:n])
        calls, tokens = clock.calls["prefill"], clock.tokens
        wall, cpu = timed(lambda: rerank_head(reranker, [head], n))
        return {"wall": wall, "cpu": cpu, "calls": clock.calls["prefill"] - calls, "tokens": clock.tokens - tokens}

    runs = {"softmax sliding 100": (sliding, 100), **{f"linear one-window {n}": (one[n], n) for n in args.linear_sizes}}
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    with ForwardClock(softmax.model) as soft_clock, ForwardClock(linear.model) as lin_clock:
        for cand in lists:
            for name, (reranker, n) in runs.items():  # linear sizes ascending: the largest list last
                rows[name].append(measure(reranker, cand, n, soft_clock if reranker is sliding else lin_clock))
            print(f"  {cand.query.qid}: " + ", ".join(f"{k} {v[-1]['cpu']:.1f} CPU s" for k, v in rows.items()),
                  file=sys.stderr)
    keys = ("wall", "cpu", "calls", "tokens")
    summary = {name: {key: statistics.mean(r[key] for r in got) for key in keys} for name, got in rows.items()}
    exact_peaks()
    smallest = {}  # one untimed call per model first: a model's first call under mallopt allocates for good
    for name, (reranker, n) in runs.items():
        head = Candidates(lists[0].query, lists[0].hits[:n])
        if id(reranker.lm) not in smallest:
            smallest[id(reranker.lm)] = rerank_head(reranker, [head], n)
        summary[name]["peak MiB"] = timed_peak(lambda: rerank_head(reranker, [head], n))[2]

    settings = "fresh (initial feature maps)" if args.linear == "fresh" else args.linear
    print(f"\nPart 3: FIRST in one window on the linearised model ({settings}) vs sliding windows on the softmax "
          f"model; {len(lists)} SciFact queries, passages cut to {args.passage_words} words; per query")
    print("(tokens: read by the model over all its calls; peak: above the memory held before one call, first query; "
          "KiB/token: that peak over the prompt's tokens)")
    print(f"{'':<22} {'calls':>6} {'tokens':>7} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} {'KiB/token':>9}")
    for name, r in summary.items():
        per_token = f"{1024 * r['peak MiB'] / r['tokens']:.1f}" if name.startswith("linear") else "-"
        tokens = f"{r['tokens']:.0f}"
        print(f"{name:<22} {r['calls']:>6.0f} {tokens:>7} {r['wall']:>7.2f} {r['cpu']:>7.2f} {r['peak MiB']:>9.0f} "
              f"{per_token:>9}")
    soft = summary["softmax sliding 100"]
    if 100 in args.linear_sizes:
        lin = summary["linear one-window 100"]
        print(f"top 100, softmax sliding (20/10) / linear one window: {ratio(soft['wall'], lin['wall'])} wall, "
              f"{ratio(soft['cpu'], lin['cpu'])} CPU (goal >= 3)")
        for n in args.linear_sizes:
            if n > 100:
                big_n = summary[f"linear one-window {n}"]
                print(f"linear one window, time({n}) / time(100): {ratio(big_n['wall'], lin['wall'])} wall, "
                      f"{ratio(big_n['cpu'], lin['cpu'])} CPU" + (" (goal <= 11)" if n == 1000 else "") +
                      f"; tokens {ratio(big_n['tokens'], lin['tokens'])}; peak {lin['peak MiB']:.0f} -> "
                      f"{big_n['peak MiB']:.0f} MiB")
    return {"queries": [c.query.qid for c in lists], "per_query": rows, "mean": summary,
            "peaks": "MiB above the resident memory before one call on the first query"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default=None, help="model dtype (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass (windows or pairs)")
    parser.add_argument("--rerankers", nargs="*", default=["first", "listwise", "query-likelihood"],
                        help="part 1's rerankers, any names of rankline.rerankers.registry (none: skip part 1)")
    parser.add_argument("--sizes", nargs="+", default=["20", "100", "500"],
                        help="part 2's numbers of passages ('none': skip part 2)")
    parser.add_argument("--full-max", type=int, default=100, help="largest size timed with full attention")
    parser.add_argument("--first-max", type=int, default=100, help="largest size timed with FIRST in part 2")
    parser.add_argument("--candidates", type=Path, default=CANDIDATES)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--linear", metavar="fresh|DIR",
                        help="part 3: the linearised model (fresh: --model linearised in memory; DIR: a rankline "
                             "linearize folder); without it part 3 is skipped")
    parser.add_argument("--linear-sizes", type=int, nargs="+", default=[100, 300, 1000],
                        help="part 3: candidates per one-window list, ascending (default 100 300 1000)")
    parser.add_argument("--linear-queries", type=int, default=2, help="part 3: SciFact queries (default 2)")
    parser.add_argument("--passage-words", type=int, default=40, help="part 3: words per passage (default 40)")
    parser.add_argument("--linear-window", type=int, default=64, help="part 3, fresh: softmax window (default 64)")
    parser.add_argument("--linear-decay", default="none", choices=["none", "fixed", "learned"],
                        help="part 3, fresh: decay (default none)")
    args = parser.parse_args(argv)
    args.sizes = [] if args.sizes == ["none"] else [int(n) for n in args.sizes]
    if args.linear_sizes != sorted(args.linear_sizes) or min(args.linear_sizes) < 1:
        parser.error("--linear-sizes must be positive and ascending")

    import torch

    from rankline.formats import read_candidates
    from rankline.rerankers.models import load_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    lists = read_candidates(args.candidates)[: args.queries] if args.rerankers or args.sizes else []
    lm = load_causal_lm(args.model, dtype=args.dtype)
    print(f"model {args.model} ({lm.model.dtype}, {lm.device}, {torch.get_num_threads()} threads)")
    result: dict[str, Any] = {"model": args.model, "dtype": str(lm.model.dtype), "queries": len(lists)}
    if args.rerankers:
        result["rerankers"] = compare_rerankers(args, lm, lists)
    if args.sizes:
        result["blockrank"] = blockrank_sweep(args, lm, lists)
    if args.linear:
        result["linear"] = linear_sweep(args, lm)
    if args.json:
        from rankline.formats import atomic_write

        with atomic_write(args.json) as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
