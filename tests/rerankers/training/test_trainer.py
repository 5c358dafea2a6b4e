"""The trainer on a tiny random Llama: an interrupted run resumed with the same call ends with bit-for-bit the
weights of an uninterrupted one (LoRA with dropout, and full fine-tuning), checkpoints are atomic, verified
and refused under other settings, an interrupt waits for the update it lands in, the schedule is transformers',
the held-out scores are hand-checkable, and the best adapter loads with load_causal_lm(..., adapter=)."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time

import pytest
import torch

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.training import checkpoint as ckpt
from rankline.rerankers.training.data import RankingExample, split_by_query
from rankline.rerankers.training.schedule import cosine_with_warmup, make_scheduler
from rankline.rerankers.training.trainer import TrainConfig, ndcg_at, train

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
WORDS = "cat dog fish bird tree river stone cloud wind fire".split()


def make_examples(count: int, n: int = 4, seed: int = 0) -> list[RankingExample]:
    rng = random.Random(seed)
    out = []
    for q in range(count):
        hits = tuple(Hit(f"q{q}-d{i}", 0.0, " ".join(rng.choice(WORDS) for _ in range(4))) for i in range(n))
        order = list(range(n))
        rng.shuffle(order)
        grades = [0] * n
        grades[order[0]] = 1
        out.append(RankingExample(Candidates(Query(f"q{q}", f"which {rng.choice(WORDS)}"), hits), tuple(order),
                                  tuple(grades)))
    return out


@pytest.fixture(scope="module")
def tiny_path(fixtures_dir) -> str:
    return str(fixtures_dir / "first-parity" / "tiny-llama")


def weights_of(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors"))


def config(tiny_path, **overrides) -> TrainConfig:
    base = dict(model=tiny_path, max_steps=6, batch_size=2, grad_accum=2, held_out=2, eval_every=3, save_every=2,
                keep=2, lr=5e-3, lora_rank=4, lora_alpha=8, lora_dropout=0.1, warmup_steps=2, progress=False,
                device="cpu", dtype="float32")
    return TrainConfig(**{**base, **overrides})


class Crash(Exception):
    pass


def crash_after(k):
    def callback(step, metrics):
        if step == k:
            raise Crash(step)
    return callback


@pytest.mark.parametrize("method,full", [("first", False), ("first", True), ("blockrank", False)])
def test_resumed_run_ends_with_the_same_weights_bit_for_bit(tiny_path, tmp_path, method, full):
    examples = make_examples(10)
    cfg = config(tiny_path, method=method, full=full, lr=5e-4 if full else 5e-3)
    straight = train(cfg, examples, tmp_path / "straight")
    with pytest.raises(Crash):  # dies after step 5: the last checkpoint is step-4, so step 5 is done again
        train(cfg, examples, tmp_path / "resumed", callback=crash_after(5))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [2, 4]
    resumed = train(cfg, examples, tmp_path / "resumed")
    assert resumed.resumed_from == 4 and resumed.steps == straight.steps == 6
    a = weights_of(tmp_path / "straight" / "checkpoints" / "step-6")
    b = weights_of(tmp_path / "resumed" / "checkpoints" / "step-6")
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the weights moved, and the held-out history (steps 3 and 6) is the same in both runs
    assert resumed.history == straight.history and [h["step"] for h in straight.history] == [0, 3, 6]
    assert (tmp_path / "resumed" / "best" / "training.json").is_file()
    assert (tmp_path / "resumed" / "final").is_dir()


def test_lora_weights_change_and_only_the_adapter_is_saved(tiny_path, tmp_path):
    result = train(config(tiny_path, max_steps=2, held_out=0), make_examples(6), tmp_path / "run")
    saved = weights_of(tmp_path / "run" / "checkpoints" / "step-2")
    assert saved and all("lora_" in name for name in saved)
    assert any(float(t.abs().sum()) > 0 for n, t in saved.items() if "lora_B" in n)  # B starts at 0
    assert (result.best / "adapter_config.json").is_file()


def test_held_out_queries_and_curve_are_written_for_evaluation_outside_the_trainer(tiny_path, tmp_path):
    examples = make_examples(6)
    result = train(config(tiny_path, max_steps=3, held_out=2, eval_every=1), examples, tmp_path / "run")
    _, held = split_by_query(examples, held_out=2, seed=0)
    qids = (tmp_path / "run" / "held-out-qids.txt").read_text().splitlines()
    assert qids == [e.qid for e in held] and len(qids) == 2
    curve = json.loads((tmp_path / "run" / "held-out.json").read_text())
    assert curve == {"history": result.history, "best": result.best_scores}
    assert [h["step"] for h in curve["history"]] == [0, 1, 2, 3]
    # step 0 scores the untuned model: a run at another learning rate starts from the same entry, then parts
    other = train(config(tiny_path, max_steps=3, held_out=2, eval_every=3, lr=2e-2), examples, tmp_path / "other")
    assert other.history[0] == result.history[0] and other.history[1]["loss"] != result.history[3]["loss"]


def test_held_out_disjoint_leaves_out_the_training_query_that_shares_a_positive(tiny_path, tmp_path, capsys):
    examples = make_examples(6)
    _, held = split_by_query(examples, held_out=2, seed=0)
    positive = next(h for h, g in zip(held[0].hits, held[0].grades) if g > 0)
    k = next(i for i, e in enumerate(examples) if e.qid not in {h.qid for h in held})
    hits = tuple(positive if g > 0 else h for h, g in zip(examples[k].hits, examples[k].grades))
    examples[k] = RankingExample(Candidates(examples[k].query, hits), examples[k].order, examples[k].grades)
    cfg = config(tiny_path, max_steps=1, held_out=2, held_out_disjoint=True)
    train(cfg, examples, tmp_path / "run")
    assert "training queries left out for sharing a positive passage with them: 1" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["held_out_disjoint"] is True
    assert "held_out_disjoint" not in config(tiny_path).settings(examples)  # off: the settings of older runs


def test_grade_ties_score_only_the_pairs_of_unequal_grade(tiny_path, tmp_path):
    """The step-0 held-out loss (the untuned model: LoRA's B starts at 0) of a ranking-only run is weighted
    RankNet over the held-out windows, computed here from the model's first-token scores: over every pair of
    the teacher order without grade_ties, over the (positive, negative) pairs only with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rankline.rerankers.training.first_loss import FirstObjective, collate_first, encode_first, first_loss, identifier_ids

    examples = make_examples(6)
    _, held = split_by_query(examples, held_out=2, seed=0)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_path).eval(), AutoTokenizer.from_pretrained(tiny_path)
    ids = identifier_ids(tok)
    with torch.no_grad():
        scores = [first_loss(model, collate_first([encode_first(tok, e, identifiers=ids)], pad_token_id=0,
                                                  identifiers=ids), FirstObjective()).scores[0] for e in held]

    def expected(graded: bool) -> float:
        per_window = []
        for s, e in zip(scores, held):
            rank = {position: r for r, position in enumerate(e.order, 1)}
            pairs = [(i, j) for i in rank for j in rank
                     if rank[i] < rank[j] and (not graded or e.grades[i] > e.grades[j])]
            per_window.append(sum(math.log1p(math.exp(-(float(s[i]) - float(s[j])))) / (rank[i] + rank[j])
                                  for i, j in pairs) / len(pairs))
        return sum(per_window) / len(per_window)

    for graded in (False, True):
        cfg = config(tiny_path, max_steps=1, held_out=2, objective="ranking", grade_ties=graded)
        result = train(cfg, examples, tmp_path / f"run-{graded}")
        assert result.history[0]["loss"] == pytest.approx(expected(graded), rel=1e-5)
    assert expected(True) != pytest.approx(expected(False), rel=1e-3)
    with pytest.raises(ValueError, match="grade_ties applies to FIRST"):
        config(tiny_path, method="blockrank", grade_ties=True)


def test_a_bad_example_stops_the_run_before_the_first_step(tiny_path, tmp_path):
    """A BlockRank query block longer than --max-block-tokens would lose its scoring token: the run refuses it
    before training anything, however late in the data order the example comes."""
    examples = make_examples(6)
    long_query = Query("q5", " ".join(WORDS * 8))
    examples[5] = RankingExample(Candidates(long_query, examples[5].candidates.hits), examples[5].order,
                                 examples[5].grades)
    cfg = config(tiny_path, method="blockrank", max_steps=1, held_out=0, max_block_tokens=64)
    with pytest.raises(ValueError, match=r"the query block has \d+ tokens but blocks are cut to 64"):
        train(cfg, examples, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    # with room for the query the same data trains, and the block cap is one of the run's settings
    result = train(config(tiny_path, method="blockrank", max_steps=1, held_out=0, max_block_tokens=512), examples,
                   tmp_path / "ok")
    assert json.loads((result.best / "training.json").read_text())["settings"]["max_block_tokens"] == 512
    with pytest.raises(ValueError, match="max_block_tokens must be >= 1"):
        config(tiny_path, max_block_tokens=0)


def test_a_run_started_from_an_adapter_starts_where_that_adapter_left_off(tiny_path, tmp_path):
    """init_adapter: the new run's step-0 held-out score is the old run's last one (the same weights on the same
    held-out lists), training moves the adapter on from there, and the adapter is part of the settings."""
    examples = make_examples(8)
    old = train(config(tiny_path, max_steps=2, eval_every=2, lora_dropout=0.0), examples, tmp_path / "old")
    assert [h["step"] for h in old.history] == [0, 2]
    new = train(config(tiny_path, max_steps=2, eval_every=2, init_adapter=str(old.final)), examples, tmp_path / "new")
    assert new.history[0] == {**old.history[-1], "step": 0} and new.history[0] != old.history[0]
    started = {n.replace(".default", ""): t for n, t in weights_of(tmp_path / "new" / "checkpoints" / "step-2").items()}
    from safetensors.torch import load_file

    given = load_file(str(old.final / "adapter_model.safetensors"))
    assert {n.replace("base_model.model.", "") for n in given} == {n.replace("base_model.model.", "") for n in started}
    assert any(not torch.equal(given[n], started[n]) for n in given)  # it trained on from there
    settings = json.loads((tmp_path / "new" / "settings.json").read_text())
    assert settings["init_adapter"].startswith("sha256:") and "init_adapter" not in json.loads(
        (tmp_path / "old" / "settings.json").read_text())
    # another adapter under the same path is other settings: the run is not resumed from it
    other = train(config(tiny_path, max_steps=1, held_out=0, lr=1e-2), examples, tmp_path / "other")
    shutil.copyfile(other.final / "adapter_model.safetensors", old.final / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"other settings \(init_adapter: 'sha256:"):
        train(config(tiny_path, max_steps=2, eval_every=2, init_adapter=str(old.final)), examples, tmp_path / "new")


def test_skip_lists_starts_a_run_where_an_earlier_run_of_the_same_stream_stopped(tiny_path, tmp_path, monkeypatch):
    """A run of 2 steps that skips 4 lists trains on the lists steps 2 and 3 of an unskipped run train on, in the
    same order; the stream crosses into the next epoch's permutation the same way."""
    from rankline.rerankers.training import trainer

    real, seen = trainer._stream_indices, []
    monkeypatch.setattr(trainer, "_stream_indices", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    examples = make_examples(10)  # 8 training lists, 2 held out
    train(config(tiny_path, max_steps=5, grad_accum=1, held_out=2), examples, tmp_path / "whole")
    whole, seen[:] = list(seen), []
    train(config(tiny_path, max_steps=3, grad_accum=1, held_out=2, skip_lists=4), examples, tmp_path / "rest")
    assert seen == whole[2:] and len({i for batch in whole for i in batch}) == 8  # step 4 is in epoch 1
    assert json.loads((tmp_path / "rest" / "settings.json").read_text())["skip_lists"] == 4
    assert "skip_lists" not in json.loads((tmp_path / "whole" / "settings.json").read_text())
    with pytest.raises(ValueError, match="skip_lists must be >= 0"):
        config(tiny_path, skip_lists=-1)


def test_an_adapter_of_other_lora_settings_cannot_start_a_run(tiny_path, tmp_path):
    old = train(config(tiny_path, max_steps=1, held_out=0), make_examples(6), tmp_path / "old")
    with pytest.raises(ValueError, match=r"the adapter has lora_rank 4, the run 8"):
        train(config(tiny_path, max_steps=1, held_out=0, lora_rank=8, init_adapter=str(old.final)), make_examples(6),
              tmp_path / "r8")
    with pytest.raises(ValueError, match="cannot start full fine-tuning"):
        config(tiny_path, full=True, init_adapter=str(old.final))
    weightless = tmp_path / "weightless"
    shutil.copytree(old.final, weightless)
    (weightless / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="a LoRA adapter folder without its weights"):
        train(config(tiny_path, max_steps=1, held_out=0, init_adapter=str(weightless)), make_examples(6),
              tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before anything is written
    with pytest.raises(FileNotFoundError, match="no such adapter folder"):
        train(config(tiny_path, max_steps=1, held_out=0, init_adapter=str(tmp_path / "nowhere")), make_examples(6),
              tmp_path / "none")


def test_checkpoint_of_other_settings_is_refused(tiny_path, tmp_path):
    examples = make_examples(6)
    train(config(tiny_path, max_steps=2, held_out=0), examples, tmp_path / "run")
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.005 there, 0.001 here\)"):
        train(config(tiny_path, max_steps=2, held_out=0, lr=1e-3), examples, tmp_path / "run")
    with pytest.raises(ValueError, match=r"other settings \(examples:"):
        train(config(tiny_path, max_steps=2, held_out=0), make_examples(6, seed=1), tmp_path / "run")


def test_corrupted_checkpoint_is_refused_naming_the_file(tiny_path, tmp_path):
    examples = make_examples(6)
    cfg = config(tiny_path, max_steps=2, held_out=0)
    train(cfg, examples, tmp_path / "run")
    target = tmp_path / "run" / "checkpoints" / "step-2" / "optimizer.pt"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"optimizer\.pt: corrupted"):
        train(cfg, examples, tmp_path / "run")


def test_save_is_atomic_and_keeps_the_last_k(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = make_scheduler(opt, warmup=1, total=10)
    root = tmp_path / "checkpoints"
    (root / ".step-9.tmp-123").mkdir(parents=True)  # what a crash mid-save leaves: never listed, then removed
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, weights=dict(model.named_parameters()), optimizer=opt, scheduler=sched,
                             history=[], best=None, settings={"a": 1}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [2, 3]
    assert sorted(p.name for p in root.iterdir()) == ["step-2", "step-3"]
    manifest = json.loads((root / "step-3" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"weights.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"}
    (root / "step-3" / "state.json").unlink()
    with pytest.raises(ValueError, match="state.json: missing"):
        ckpt.verify(root / "step-3")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_inside_an_update_lands_after_it(sig):
    """A signal inside `uninterrupted()` reaches its handler only when the block has run to its end; the handlers
    before it are back afterwards. (Both handlers are set here: an earlier test's Ray Train may have left its own
    SIGINT handler, which does not raise.)"""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def to_interrupt(signum, frame):
        raise KeyboardInterrupt

    for s in handlers:
        signal.signal(s, to_interrupt)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with ckpt.uninterrupted():
                os.kill(os.getpid(), sig)
                for _ in range(1000):  # time for Python to run a handler, had it not been held
                    time.sleep(0)
                done.append(True)
        assert done == [True]
        assert signal.getsignal(signal.SIGTERM) is to_interrupt and signal.getsignal(signal.SIGINT) is to_interrupt
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def test_an_ignored_signal_stays_ignored_inside_an_update():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ckpt.uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_schedule_is_transformers_cosine_with_warmup():
    from transformers import get_cosine_schedule_with_warmup

    for warmup, total in ((0, 10), (3, 10), (5, 7)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        theirs = get_cosine_schedule_with_warmup(opt, warmup, total)
        for step in range(total):
            assert cosine_with_warmup(step, warmup=warmup, total=total) == pytest.approx(theirs.get_last_lr()[0])
            opt.step()
            theirs.step()


def test_ndcg_by_hand():
    # gains [0, 2, 1]; scores put position 2 first, then 1, then 0: DCG = 1 + 2/log2(3), IDCG = 2 + 1/log2(3)
    assert ndcg_at([0.1, 0.5, 0.9], [0, 2, 1]) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at([0.0, 0.0], [0, 1]) == pytest.approx(1 / math.log2(3))  # ties keep window order


def test_best_adapter_loads_with_load_causal_lm(tiny_path, tmp_path):
    from peft import PeftModel

    from rankline.rerankers.models import load_causal_lm

    result = train(config(tiny_path, max_steps=2, held_out=2, eval_every=1, lora_dropout=0.0), make_examples(6),
                   tmp_path / "run")
    lm = load_causal_lm(tiny_path, device="cpu", dtype="float32", adapter=str(result.best))
    base = load_causal_lm(tiny_path, device="cpu", dtype="float32")
    reference = PeftModel.from_pretrained(base.model, str(result.best)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, reference(ids).logits, atol=1e-5)
    assert lm.adapter == str(result.best)
    again = __import__("pickle").loads(__import__("pickle").dumps(lm))
    assert again.adapter == str(result.best)
