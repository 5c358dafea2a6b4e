"""The numbers benchmarks/rerank_speed.py's part 3 prints besides times, against hand-made cases: the peak memory
of a call (a known allocation, in a child process because the measurement changes glibc's settings for good), and
the forward calls and tokens counted for sliding windows and for one window on the tiny Llama."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rerank_speed.py"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_of_a_call_is_what_it_allocated() -> None:
    code = f"""
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("rerank_speed", {str(SCRIPT)!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
big = lambda: torch.ones(256 * 2**20 // 4).sum()  # 256 MiB, touched, freed on return
big()  # whatever an earlier call left behind must not hide the next one's peak
m.exact_peaks()
print(m.timed_peak(big)[2], m.timed_peak(big)[2], m.timed_peak(lambda: None)[2])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    first, again, nothing = map(float, out)
    assert 250 <= first <= 270 and 250 <= again <= 270 and nothing < 5


def test_calls_and_tokens_are_counted(fixtures_dir, benchmark_script) -> None:
    from rankline.formats import Candidates, Hit, Query
    from rankline.rerankers import build_reranker, rerank_head
    from rankline.rerankers.models import load_causal_lm

    speed = benchmark_script("rerank_speed")
    lm = load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu")
    # one text for all: every window of 20 reads the same number of tokens, whatever order the last one left
    cand = Candidates(Query("q", "art"), tuple(Hit(f"d{i}", float(-i), "a passage text") for i in range(40)))
    sliding = build_reranker("first", lm, window=20, stride=10, batch_size=1)
    one = build_reranker("first", lm, window=40, batch_size=1)
    with speed.ForwardClock(lm.model) as clock:
        rerank_head(one, [cand], 40)
    assert clock.calls["prefill"] == 1
    assert clock.tokens == len(lm.tokenizer.encode(one.engine_input(cand)))
    with speed.ForwardClock(lm.model) as clock:
        rerank_head(sliding, [cand], 40)
    assert clock.calls["prefill"] == 3  # (20, 40), (10, 30), (0, 20)
    assert clock.tokens == 3 * len(lm.tokenizer.encode(sliding.engine_input(Candidates(cand.query, cand.hits[:20]))))
