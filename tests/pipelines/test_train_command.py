"""`rankline train` end to end on the tiny Llama: lists from qrels + a first-stage run, the adapter it writes
reranks through `rankline rerank --adapter`, rerunning the command resumes, a background run stops on kill
after saving, bad input is one clear error, two Ray Train workers (gloo) reach the weights of one worker
with the same global batch, and a linearised model trains its stage-2 LoRA adapter the same way."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from rankline.formats import read_run
from rankline.pipelines.cli import main
from rankline.rerankers.training import checkpoint as ckpt

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
WORDS = "cat dog fish bird tree river stone cloud wind fire".split()


@pytest.fixture()
def data(tmp_path):
    """Requests jsonl (8 queries x 5 candidates) and qrels with one positive per query."""
    rng = random.Random(0)
    lines, qrels = [], []
    for q in range(8):
        cands = [{"docid": f"q{q}-d{i}", "score": float(10 - i), "text": " ".join(rng.choice(WORDS) for _ in range(5))}
                 for i in range(5)]
        lines.append(json.dumps({"qid": f"q{q}", "query": f"which {rng.choice(WORDS)}", "candidates": cands}))
        qrels.append(f"q{q} 0 q{q}-d{rng.randrange(5)} 1")
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return tmp_path


def base_args(data, fixtures_dir, out, *extra):
    return ["train", "--method", "first", "--model", str(fixtures_dir / "first-parity" / "tiny-llama"),
            "--out", str(out), "--candidates", str(data / "train.jsonl"), "--qrels", str(data / "qrels.txt"),
            "--list-size", "4", "--lora-rank", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "5e-3",
            "--device", "cpu", "--dtype", "float32", "--eval-every", "2", *extra]


def test_train_then_rerank_with_the_adapter(data, fixtures_dir, capsys):
    out = data / "run"
    assert main(base_args(data, fixtures_dir, out, "--max-steps", "4", "--held-out", "2")) == 0
    assert "--adapter" in capsys.readouterr().err
    assert (out / "best" / "adapter_config.json").is_file() and (out / "final").is_dir()
    info = json.loads((out / "best" / "training.json").read_text())
    assert info["step"] in (0, 2, 4) and set(info["held_out"]) == {"loss", "top1", "ndcg@10"}
    # rerunning the finished command resumes at its last checkpoint and has nothing left to do
    assert main(base_args(data, fixtures_dir, out, "--max-steps", "4", "--held-out", "2")) == 0
    # other settings into the same folder are refused, naming the setting
    assert main(base_args(data, fixtures_dir, out, "--max-steps", "5", "--held-out", "2")) == 2
    assert "max_steps: 4 there, 5 here" in capsys.readouterr().err
    run = data / "reranked.trec"
    assert main(["rerank", "--candidates", str(data / "train.jsonl"), "--reranker", "first",
                 "--model", str(fixtures_dir / "first-parity" / "tiny-llama"), "--adapter", str(out / "best"),
                 "--device", "cpu", "--out", str(run)]) == 0
    assert len(read_run(run)) == 8


@pytest.mark.parametrize("extra,message", [
    (["--sharegpt", "x.json"], "one source of training data"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--held-out", "half"], "--held-out must be a count"),
    (["--held-out", "0", "--held-out-disjoint"], "--held-out-disjoint needs held-out queries"),
])
def test_bad_input_is_one_line(data, fixtures_dir, capsys, extra, message):
    assert main(base_args(data, fixtures_dir, data / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_adapter_is_refused_as_a_model(data, fixtures_dir, capsys):
    out = data / "run"
    assert main(base_args(data, fixtures_dir, out, "--max-steps", "1", "--held-out", "0")) == 0
    assert main(["rerank", "--candidates", str(data / "train.jsonl"), "--reranker", "first", "--model",
                 str(out / "best"), "--device", "cpu", "--out", str(data / "x.trec")]) == 2
    assert "a LoRA adapter, not a model folder" in capsys.readouterr().err


def test_a_run_goes_on_from_an_adapter_with_its_lora_settings(data, fixtures_dir, capsys):
    """--init-adapter: the LoRA options left out are the adapter's (rank 4, alpha 8 here, not the defaults 16
    and 32); one that contradicts the adapter is one clear error."""
    out = data / "run"
    assert main(base_args(data, fixtures_dir, out, "--max-steps", "1", "--held-out", "0")) == 0
    args = base_args(data, fixtures_dir, data / "next", "--max-steps", "1", "--held-out", "0",
                     "--init-adapter", str(out / "final"))
    for option in ("--lora-rank", "--lora-alpha"):
        del args[args.index(option):args.index(option) + 2]
    assert main(args) == 0
    settings = json.loads((data / "next" / "settings.json").read_text())
    assert (settings["lora_rank"], settings["lora_alpha"]) == (4, 8) and settings["init_adapter"].startswith("sha256:")
    capsys.readouterr()
    assert main([*args, "--lora-rank", "8", "--out", str(data / "r8")]) == 2
    assert "the adapter has lora_rank 4, the run 8" in capsys.readouterr().err


def test_two_ray_workers_reach_the_weights_of_one(ray_session, data, fixtures_dir):
    """Same global batch of 4 lists: one worker with 2 micro-batches of 2 per step (in process) against two
    Ray Train workers with one micro-batch of 2 each and the gradients all-reduced over gloo. Only the order
    of the float sums differs, so after 3 AdamW steps the weights agree to 1e-5 (absolute)."""
    from safetensors.torch import load_file

    from rankline.rerankers.training.data import read_training_examples, ListOptions
    from rankline.rerankers.training.trainer import TrainConfig, train

    examples = read_training_examples(data / "train.jsonl", qrels=data / "qrels.txt",
                                      options=ListOptions(list_size=4)).examples
    common = dict(method="first", model=str(fixtures_dir / "first-parity" / "tiny-llama"), max_steps=3, batch_size=2,
                  held_out=0, lora_rank=4, lora_alpha=8, lora_dropout=0.0, lr=5e-3, warmup_steps=1, progress=False,
                  device="cpu", dtype="float32")
    train(TrainConfig(grad_accum=2, workers=1, **common), examples, data / "one")
    train(TrainConfig(grad_accum=1, workers=2, **common), examples, data / "two")
    one = load_file(str(data / "one" / "checkpoints" / "step-3" / "weights.safetensors"))
    two = load_file(str(data / "two" / "checkpoints" / "step-3" / "weights.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=0, atol=1e-5), (name, (one[name] - two[name]).abs().max())
    assert any(float(t.abs().max()) > 1e-3 for n, t in one.items() if "lora_B" in n)  # B starts at 0: it trained


def trained_steps_scored(out):
    """Whether the held-out curve of the run in ``out`` has an entry after step 0 (the untuned model)."""
    try:
        history = json.loads((out / "held-out.json").read_text())["history"]
    except FileNotFoundError:  # not written yet; each write is atomic, so an existing file is whole
        return False
    return any(entry["step"] > 0 for entry in history)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_background_run_stops_on_kill_after_saving_its_last_step(data, fixtures_dir, sig):
    """Started the way a long run is (`nohup ... &` from a script, so SIGINT arrives ignored), the command
    still stops on SIGTERM or SIGINT, saves the steps it finished although no checkpoint was due, and says so."""
    out = data / "run"
    args = base_args(data, fixtures_dir, out, "--max-steps", "5000", "--held-out", "2", "--save-every", "5000")
    proc = subprocess.Popen([sys.executable, "-m", "rankline.pipelines.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 300
        while not trained_steps_scored(out):  # the curve starts at step 0, the untuned model; step 2 is trained
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "rankline train: interrupted" in err
    saved = ckpt.list_checkpoints(out / "checkpoints")
    assert len(saved) == 1 and 2 <= saved[0][0] < 5000


def test_stage_two_trains_a_lora_adapter_on_a_linearised_model(data, fixtures_dir, capsys):
    """LoLCATs stage 2 (issue 16): `rankline train --model DIR` on a `rankline linearize` folder wraps the
    linearised layers' projections in LoRA, leaves what stage 1 learned (feature maps, mixing factors, decays) as
    it was, and the adapter reranks through `--model DIR --adapter`."""
    from safetensors.torch import load_file

    from rankline.rerankers.linear.llama import LinearisedLlamaAttention
    from rankline.rerankers.models import load_causal_lm

    corpus = data / "corpus.jsonl"
    rng = random.Random(1)
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(WORDS, k=30))})
                              + "\n" for i in range(30)))
    lin, out = data / "lin", data / "run"
    assert main(["linearize", "--model", str(fixtures_dir / "first-parity" / "tiny-llama"), "--out", str(lin),
                 "--corpus", str(corpus), "--window", "2", "--decay", "learned", "--steps", "3", "--seq-len", "32",
                 "--device", "cpu"]) == 0
    assert main(base_args(data, fixtures_dir, out, "--model", str(lin), "--max-steps", "4", "--held-out", "2")) == 0

    wrapped = {k.rsplit(".lora_", 1)[0] for k in load_file(str(out / "final" / "adapter_model.safetensors"))}
    base, tuned = load_causal_lm(str(lin), device="cpu"), load_causal_lm(str(lin), device="cpu",
                                                                         adapter=str(out / "final"))
    layers = len(base.model.model.layers)
    assert len(wrapped) == 4 * layers and all(".self_attn." in k for k in wrapped)  # q, k, v, o of every layer
    for a, b in zip(base.model.model.layers, tuned.model.model.layers):
        assert isinstance(b.self_attn, LinearisedLlamaAttention)
        for p, q in zip(a.self_attn.transfer_parameters(), b.self_attn.transfer_parameters()):
            assert torch.equal(p, q)
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits, atol=1e-4)
    run = data / "reranked.trec"
    assert main(["rerank", "--candidates", str(data / "train.jsonl"), "--reranker", "first", "--model", str(lin),
                 "--adapter", str(out / "final"), "--device", "cpu", "--out", str(run)]) == 0
    assert len(read_run(run)) == 8
