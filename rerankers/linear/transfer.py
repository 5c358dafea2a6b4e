"""Stage 1 of linearisation, attention transfer (LoLCATs): every attention layer of a softmax Llama gets a
``LinearisedLlamaAttention`` twin sharing its projections, and only the twins' feature maps, mixing factors and
learned decays train, each layer to reproduce its own softmax attention output (after o_proj; MSE, averaged over
layers) given the softmax model's input to that layer, collected with forward hooks on a no-grad softmax pass.

Text: a corpus file (BEIR corpus.jsonl: title and text of each document, EOS between documents) cut into
``seq_len``-token sequences. Every tenth document (index % 10 == 9) is held out: transfer never sees it and
``corpus_sequences(..., held_out=True)`` returns it for fidelity measurements. Step s uses sequences
``[s B, (s + 1) B)`` of a seeded permutation (wrapping around), so the data position is the step.

A run may start from an earlier linearisation of the same model (``init``, a linearised folder with the same
window and decay) instead of the identity feature maps: a second transfer stage on longer sequences goes on from
the first. The folder's settings file records the earlier stage's transfer settings under ``init_transfer``.

Resumable like ``rankline train``: ``DIR/checkpoints/step-N`` (rerankers.training.checkpoint: atomic, checksummed,
settings-checked; the twins' tensors, AdamW, the cosine schedule, RNG states), also written for the last finished
step when the run is interrupted (KeyboardInterrupt; `rankline linearize` turns SIGTERM into one). At the end the
linearised model folder (llama.py) replaces DIR in one rename, checkpoints included in the old folder it replaces;
its settings file records the transfer settings, so a rerun of a finished command does nothing and one with other
settings is refused.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankline.rerankers.linear import is_linearised, read_transfer

HELD_OUT_EVERY = 10


@dataclass(frozen=True)
class TransferConfig:
    model: str
    corpus: str
    window: int = 64
    decay: str = "none"
    steps: int = 200
    lr: float = 1e-2
    batch_size: int = 2
    seq_len: int = 256
    seed: int = 0
    max_docs: int | None = None
    save_every: int = 25
    keep: int = 2
    device: str | None = None
    init: str | None = None

    def check(self) -> None:
        from rankline.rerankers.linear.llama import LinearSettings

        LinearSettings(window=self.window, decay=self.decay).check()
        for name in ("steps", "batch_size", "seq_len", "save_every", "keep"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.max_docs is not None and self.max_docs < HELD_OUT_EVERY:
            raise ValueError(f"max_docs must be at least {HELD_OUT_EVERY} (every tenth document is held out), "
                             f"got {self.max_docs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_transfer_corpus(self.corpus)
        if self.init is not None:
            self.init_transfer()

    def init_transfer(self) -> dict[str, Any]:
        """The transfer settings of ``init`` (module docstring), after checking it can start this run."""
        from rankline.rerankers.linear.llama import read_settings

        if not is_linearised(self.init):
            raise ValueError(f"init must be a linearised model folder (made by rankline linearize), got {self.init}")
        settings = read_settings(self.init)
        if (settings.window, settings.decay) != (self.window, self.decay):
            raise ValueError(f"init must have this run's window and decay ({self.window}, {self.decay}); {self.init} "
                             f"has ({settings.window}, {settings.decay})")
        record = read_transfer(self.init)
        if record.get("model") != self.model:
            raise ValueError(f"init must be a linearisation of this run's model {self.model!r}; {self.init} is one of "
                             f"{record.get('model')!r}")
        return record

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (where and how often to save do not count; an
        unset ``init`` is left out, so folders and checkpoints made before the setting existed still match)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("save_every", "keep", "device") and not (k == "init" and v is None)}


def check_transfer_corpus(corpus: str) -> None:
    """Transfer text is corpus text: no TREC DL 2019 (a test collection here) and no query file."""
    path = Path(corpus)
    if "trec-dl-2019" in path.parts or path.name.startswith(("queries", "topics")):
        raise ValueError(f"{corpus}: attention transfer reads corpus text only (never TREC DL 2019, never queries)")
    if not path.is_file():
        raise FileNotFoundError(f"{corpus}: no such corpus file")


def corpus_sequences(tokenizer: Any, corpus: str, seq_len: int, *, held_out: bool = False,
                     max_docs: int | None = None) -> list[list[int]]:
    """The corpus' documents (module docstring: the training or the held-out split) as ``seq_len``-token sequences."""
    from rankline.formats import iter_corpus

    stream: list[int] = []
    for index, doc in enumerate(iter_corpus(corpus)):
        if max_docs is not None and index >= max_docs:
            break
        if (index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out:
            text = f"{doc.title}\n{doc.text}" if doc.title else doc.text
            stream += tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    sequences = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    if not sequences:
        raise ValueError(f"{corpus}: too little text for one {seq_len}-token sequence")
    return sequences


class LayerRecorder:
    """Forward hooks on every attention layer of a softmax Llama: its input hidden states, the position
    embeddings and its output, from the last forward pass."""

    def __init__(self, model: Any):
        self.inputs: dict[int, Any] = {}
        self.outputs: dict[int, Any] = {}
        self.position_embeddings: Any = None
        self.handles = [layer.self_attn.register_forward_hook(self._hook(i), with_kwargs=True)
                        for i, layer in enumerate(model.model.layers)]

    def _hook(self, index: int):
        def record(module, args, kwargs, output):
            self.inputs[index] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.position_embeddings = kwargs["position_embeddings"]
            self.outputs[index] = output[0]
        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def layer_errors(twins: list, recorder: LayerRecorder) -> "list[Any]":
    """Per layer, the MSE between the twin's output and the softmax layer's recorded output."""
    import torch.nn.functional as F

    return [F.mse_loss(twin(recorder.inputs[i], recorder.position_embeddings)[0], recorder.outputs[i])
            for i, twin in enumerate(twins)]


def _load_init(named: dict[str, Any], init: Path) -> None:
    """Set the twins' transfer parameters to those saved in the linearised folder ``init``."""
    import torch
    from safetensors.torch import load_file

    from rankline.rerankers.linear.llama import WEIGHTS_FILE

    saved = load_file(str(init / WEIGHTS_FILE))
    wrong = [name for name, p in named.items() if name not in saved or saved[name].shape != p.shape]
    if wrong:
        raise ValueError(f"{init / WEIGHTS_FILE}: does not fit this model's layers ({len(wrong)} of {len(named)} "
                         f"tensors missing or of another shape, e.g. {wrong[0]})")
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(saved[name])


def _torch_dtype(dtype: Any) -> Any:
    import torch

    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def transfer(config: TransferConfig, out: Path, *, progress: bool = True) -> Path:
    """Run stage 1 into ``out`` (module docstring) and return it."""
    import torch
    from tqdm import tqdm

    from rankline.rerankers.linear.llama import LinearisedLlamaAttention, LinearSettings, save_linearised
    from rankline.rerankers.models import load_causal_lm, resolve_model_path
    from rankline.rerankers.training import checkpoint as ckpt
    from rankline.rerankers.training.schedule import make_scheduler

    config.check()
    out = Path(out)
    if is_linearised(out):
        done = read_transfer(out)
        done.pop("init_transfer", None)  # a record of the earlier stage, not a setting of this one
        diff = ckpt.describe_difference(done, config.fingerprint())
        if diff is None:
            return out
        raise ValueError(f"{out}: holds a linearisation made with other settings ({diff}); use another --out")
    if out.exists() and any(p.name != "checkpoints" for p in out.iterdir()):
        raise ValueError(f"{out}: exists and is not an unfinished linearisation (expected only checkpoints/)")
    if is_linearised(resolve_model_path(config.model)):
        raise ValueError(f"{config.model}: already linearised; linearise its softmax base model")
    settings = LinearSettings(window=config.window, decay=config.decay)
    from transformers import AutoConfig

    source_dtype = AutoConfig.from_pretrained(resolve_model_path(config.model)).dtype  # the base is saved back in it
    lm = load_causal_lm(config.model, device=config.device, dtype="float32")
    model, device = lm.model, lm.device
    model.requires_grad_(False)
    sequences = corpus_sequences(lm.tokenizer, config.corpus, config.seq_len, max_docs=config.max_docs)
    order = list(range(len(sequences)))
    random.Random(config.seed).shuffle(order)

    torch.manual_seed(config.seed)
    layers = model.model.layers
    twins = [LinearisedLlamaAttention(layer.self_attn, settings, len(layers)) for layer in layers]
    named = {f"model.layers.{i}.self_attn.{name}": p for i, twin in enumerate(twins)
             for name, p in twin.named_parameters() if any(p is q for q in twin.transfer_parameters())}
    if config.init is not None:
        _load_init(named, Path(config.init))
    for p in named.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(named.values(), lr=config.lr, weight_decay=0.0)
    scheduler = make_scheduler(optimizer, warmup=0, total=config.steps)
    root = out / "checkpoints"
    start, history = 0, []
    found = ckpt.list_checkpoints(root)
    if found:
        weights, opt_state, sched_state, tstates, state = ckpt.load_checkpoint(found[-1][1], config.fingerprint())
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(weights[name])
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(sched_state)
        ckpt.restore_rng(state.python_rng, state.numpy_rng, tstates)
        start, history = state.step, state.history

    def save(step: int) -> None:
        ckpt.save_checkpoint(root, step, weights=named, optimizer=optimizer, scheduler=scheduler,
                             history=history, best=None, settings=config.fingerprint(), keep=config.keep)

    recorder = LayerRecorder(model)
    applied = saved = start  # steps whose update is in the twins; the last step checkpointed
    try:
        bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="attention transfer",
                   disable=not progress)
        for step in bar:
            rows = [sequences[order[(step * config.batch_size + i) % len(order)]] for i in range(config.batch_size)]
            with torch.no_grad():
                model(input_ids=torch.tensor(rows, device=device), use_cache=False)
            errors = layer_errors(twins, recorder)
            loss = torch.stack(errors).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with ckpt.uninterrupted():
                optimizer.step()
                scheduler.step()
                applied = step + 1
                history.append({"step": applied, "loss": loss.item(), "layers": [e.item() for e in errors]})
            bar.set_postfix(mse=f"{loss.item():.3g}")
            if applied % config.save_every == 0 or applied == config.steps:
                save(applied)
                saved = applied
    except KeyboardInterrupt:  # keep the steps done since the last checkpoint; a step cut short is dropped
        if applied > saved:
            save(applied)
        raise
    finally:
        recorder.remove()
    for layer, twin in zip(layers, twins):
        layer.self_attn = twin
    tmp = ckpt.temp_folder(out)
    record = config.fingerprint()
    if config.init is not None:
        record["init_transfer"] = config.init_transfer()
    save_linearised(model, lm.tokenizer, settings, tmp, base_dtype=_torch_dtype(source_dtype), transfer=record)
    ckpt.replace_folder(tmp, out)
    return out
