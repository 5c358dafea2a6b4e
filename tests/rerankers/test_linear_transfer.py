"""Attention transfer (rankline.rerankers.linear.transfer) and `rankline linearize` on the tiny Llama fixture:
the twins learn (per-layer MSE falls), the result loads with load_causal_lm and generates, an interrupted run
resumes to the same weights as an uninterrupted one, a finished folder is left alone, and bad options are one
line with exit 2 before any model loads."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rankline.pipelines.cli import main
from rankline.rerankers.linear import transfer as transfer_module
from rankline.rerankers.linear.llama import WEIGHTS_FILE, LinearisedLlamaAttention
from rankline.rerankers.linear.transfer import TransferConfig, corpus_sequences, transfer
from rankline.rerankers.models import load_causal_lm
from rankline.rerankers.training import checkpoint as ckpt

WORDS = "cell protein gene expression tumor growth patients trial dose response blood cohort risk".split()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    rng = torch.Generator().manual_seed(0)
    with open(path, "w") as fh:
        for i in range(40):
            words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (30,), generator=rng)]
            fh.write(json.dumps({"_id": f"d{i}", "title": f"study {i}", "text": " ".join(words)}) + "\n")
    return path


@pytest.fixture
def tiny_model(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "first-parity" / "tiny-llama")


def _config(tiny_model, corpus, **kw) -> TransferConfig:
    return TransferConfig(**{"model": tiny_model, "corpus": str(corpus), "window": 4, "decay": "learned", "steps": 6,
                             "lr": 2e-2, "batch_size": 2, "seq_len": 32, "save_every": 2, "device": "cpu", **kw})


def test_held_out_documents_never_reach_transfer(tiny_model, corpus) -> None:
    tokenizer = load_causal_lm(tiny_model, device="cpu").tokenizer
    train = corpus_sequences(tokenizer, str(corpus), 16)
    held = corpus_sequences(tokenizer, str(corpus), 16, held_out=True)
    titles = {tokenizer.decode(ids) for ids in train}
    assert not any("study 9\n" in t or "study 19\n" in t for t in titles)
    assert any("study 9\n" in tokenizer.decode(ids) for ids in held)


def test_transfer_learns_and_the_folder_loads_and_generates(tiny_model, corpus, tmp_path) -> None:
    out = transfer(_config(tiny_model, corpus, steps=12), tmp_path / "lin", progress=False)
    record = json.loads((out / "linear_attention.json").read_text())
    assert record["window"] == 4 and record["decay"] == "learned" and record["transfer"]["steps"] == 12
    assert not (out / "checkpoints").exists()
    lm = load_causal_lm(str(out), device="cpu")
    assert all(isinstance(layer.self_attn, LinearisedLlamaAttention) for layer in lm.model.model.layers)
    ids = lm.tokenizer("study 3 cell protein", return_tensors="pt").input_ids
    generated = lm.model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids.shape[1]


def test_transfer_lowers_each_layers_error(tiny_model, corpus, tmp_path, monkeypatch) -> None:
    seen = []
    real = transfer_module.layer_errors
    monkeypatch.setattr(transfer_module, "layer_errors",
                        lambda twins, rec: seen.append([e.item() for e in real(twins, rec)]) or real(twins, rec))
    transfer(_config(tiny_model, corpus, steps=20, batch_size=4), tmp_path / "lin", progress=False)
    first, last = seen[0], seen[-1]
    assert all(b < a for a, b in zip(first, last)), (first, last)


def test_interrupted_run_resumes_to_the_same_weights(tiny_model, corpus, tmp_path, monkeypatch) -> None:
    whole = transfer(_config(tiny_model, corpus), tmp_path / "whole", progress=False)
    calls = []
    real = transfer_module.layer_errors

    def crash_in_step_6(twins, rec):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(twins, rec)

    monkeypatch.setattr(transfer_module, "layer_errors", crash_in_step_6)
    with pytest.raises(KeyboardInterrupt):
        transfer(_config(tiny_model, corpus), tmp_path / "resumed", progress=False)
    # step 5 was finished but no checkpoint was due (every 2): the interrupt saves it, step 6 is dropped
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-4", "step-5"]
    monkeypatch.setattr(transfer_module, "layer_errors", real)
    resumed = transfer(_config(tiny_model, corpus), tmp_path / "resumed", progress=False)
    a, b = load_file(str(whole / WEIGHTS_FILE)), load_file(str(resumed / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert transfer(_config(tiny_model, corpus), resumed, progress=False) == resumed  # finished: left alone
    with pytest.raises(ValueError, match="other settings"):
        transfer(_config(tiny_model, corpus, window=2), resumed, progress=False)


def test_a_second_stage_starts_from_an_earlier_linearisation(tiny_model, corpus, tmp_path) -> None:
    """With an lr too small to move anything, one step from `init` ends where `init` ended, not at the identity."""
    first = transfer(_config(tiny_model, corpus), tmp_path / "first", progress=False)
    still = dict(steps=1, lr=1e-12, seq_len=48)
    second = transfer(_config(tiny_model, corpus, init=str(first), **still), tmp_path / "second", progress=False)
    fresh = transfer(_config(tiny_model, corpus, **still), tmp_path / "fresh", progress=False)
    a, b, c = (load_file(str(d / WEIGHTS_FILE)) for d in (first, second, fresh))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-8) for k in a)
    assert any(not torch.allclose(a[k], c[k], atol=1e-4) for k in a)
    record = json.loads((second / "linear_attention.json").read_text())["transfer"]
    assert record["init"] == str(first) and record["init_transfer"]["seq_len"] == 32 and record["seq_len"] == 48
    assert transfer(_config(tiny_model, corpus, init=str(first), **still), second, progress=False) == second  # finished
    with pytest.raises(ValueError, match=r"init must have this run's window and decay \(2, learned\)"):
        _config(tiny_model, corpus, window=2, init=str(first)).check()
    with pytest.raises(ValueError, match="init must be a linearised model folder"):
        _config(tiny_model, corpus, init=tiny_model).check()


@pytest.mark.parametrize(("flags", "message"), [
    (["--window", "-1"], "--window must be an integer >= 0"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--corpus", "/nonexistent/corpus.jsonl"], "no such corpus file"),
    (["--corpus", "/data/trec-dl-2019/queries.tsv"], "never TREC DL 2019"),
    (["--model", "/nonexistent/model"], "no such model folder"),
    (["--init", "/nonexistent/linearised"], "--init must be a linearised model folder"),
])
def test_cli_refuses_bad_options_in_one_line(flags, message, corpus, tiny_model, tmp_path, capsys) -> None:
    argv = ["linearize", "--model", tiny_model, "--out", str(tmp_path / "o"), "--corpus", str(corpus), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_cli_linearizes(corpus, tiny_model, tmp_path, capsys) -> None:
    argv = ["linearize", "--model", tiny_model, "--out", str(tmp_path / "o"), "--corpus", str(corpus),
            "--window", "0", "--decay", "fixed", "--steps", "2", "--seq-len", "32", "--device", "cpu"]
    assert main(argv) == 0
    assert "--model" in capsys.readouterr().out
    lm = load_causal_lm(str(tmp_path / "o"), device="cpu")
    assert lm.model.model.layers[0].self_attn.settings.window == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_background_run_stops_on_kill_after_saving_its_last_step(sig, corpus, tiny_model, tmp_path) -> None:
    """Started as a long run is (`nohup ... &` from a script: SIGINT arrives ignored), `rankline linearize` stops
    on SIGTERM or SIGINT and checkpoints the steps it finished although no checkpoint was due."""
    out = tmp_path / "o"
    argv = ["linearize", "--model", tiny_model, "--out", str(out), "--corpus", str(corpus), "--steps", "100000",
            "--save-every", "100000", "--seq-len", "32", "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "rankline.pipelines.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    watchdog = threading.Timer(300, proc.kill)  # a run that hangs ends the read below with EOF, not the suite
    watchdog.start()
    try:
        err = ""
        while max(map(int, re.findall(r"\| (\d+)/100000", err)), default=0) < 3:  # the bar counts finished steps
            char = proc.stderr.read(1)
            assert char, f"exited {proc.wait()} before step 3: {err[-2000:]}"
            err += char
        proc.send_signal(sig)
        err += proc.communicate(timeout=120)[1]
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 130 and "rankline linearize: interrupted" in err
    saved = ckpt.list_checkpoints(out / "checkpoints")
    assert len(saved) == 1 and 3 <= saved[0][0] < 100000
