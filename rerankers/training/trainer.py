"""The trainer of the LLM rerankers: FIRST or BlockRank objectives, LoRA or full fine-tuning, resumable,
in one process or data-parallel on Ray Train.

:func:`train` takes :class:`TrainConfig` and the training examples (``RankingExample`` lists, or rank_llm
ShareGPT records for FIRST) and writes into an output folder ``DIR``:

- ``DIR/checkpoints/step-N``: resumable checkpoints (:mod:`.checkpoint`; the last ``keep``);
- ``DIR/best``: the weights with the best held-out score (nDCG@10 of the window order the model's scores
  give, ties by lower held-out loss): a peft LoRA adapter folder (load it with
  ``load_causal_lm(base, adapter=DIR/best)`` or ``--adapter DIR/best``) or, with ``full=True``, a whole model
  folder (``--model DIR/best``); its ``training.json`` says which step and scores, and the settings;
- ``DIR/final``: the weights after the last step, in the same form;
- ``DIR/held-out-qids.txt``: the held-out queries, one qid a line (evaluate a model on exactly these);
  ``DIR/held-out.json``: the held-out curve so far (``history``: one entry per evaluation) and the ``best`` entry.

**One optimizer step** consumes a global batch of ``batch_size x grad_accum x workers`` examples: the next
slice of a seeded stream of the training examples (epoch e is permutation e of them, seeded by (seed, e)),
so the data position is the step number, after the first ``skip_lists`` examples of the stream. The slice is
cut into micro-batches of ``batch_size``; worker w runs micro-batches w, w + workers, ...; each micro-batch's
loss is its objective's own mean, and the step's gradient is the mean over the micro-batches (each loss is
scaled by 1 / (grad_accum x workers) and the workers' gradients are summed by one all-reduce per step, which
is DDP's gradient averaging). Then gradients are clipped to ``max_grad_norm``, AdamW steps, and the cosine
schedule with linear warm-up (:mod:`.schedule`) moves on. With ``dtype="bfloat16"`` the forward pass runs
under bf16 autocast; weights, optimizer state and losses stay fp32.

**Resuming.** Run the same call again: the latest checkpoint (verified against its manifest and refused
when written with other settings) restores the trainable weights, the optimizer, the schedule, the data
position and the Python / NumPy / torch generator states, and training continues; on the CPU the result is
bit-for-bit the weights of an uninterrupted run. An interrupt (Ctrl-C; `rankline train` takes SIGTERM too)
saves a checkpoint of the last finished step before it ends the run.

**Held-out queries** (``held_out``: a count or a fraction of the training queries, ``split_by_query``, never
trained on; with ``held_out_disjoint`` no training query shares a positive passage with them) are scored
before the first step (the untuned model, or ``init_adapter``'s: ``best`` is a trained step only when one
beats it, and a LoRA ``best`` of step 0 is the base model or that adapter), every ``eval_every`` steps and
at the end: the mean objective loss, top-1 accuracy (the best-scored candidate is the teacher's first, or for
BlockRank a positive) and nDCG@10 of the order the scores give (gains: the qrels grades; records without grades
count the teacher's first as the one relevant candidate). Evaluate on shuffled windows (the ``ListOptions``
default), so keeping the given order cannot pass for ranking. Test queries and test qrels must never be among
the examples.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from rankline.formats import atomic_write
from rankline.rerankers.models import DEFAULT_MODEL
from rankline.rerankers.training import checkpoint as ckpt
from rankline.rerankers.training.data import ListwiseConversation, RankingExample, split_by_query
from rankline.rerankers.training.schedule import make_scheduler, warmup_steps

METHODS = ("first", "blockrank")
OBJECTIVES = ("combined", "ranking", "lm")
DTYPES = ("auto", "float32", "bfloat16")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
DEFAULT_LR = {"lora": 1e-4, "full": 2e-5}
# The settings that do not change the trajectory of a run, and so may differ when it is resumed.
_FREE_SETTINGS = {"eval_every", "save_every", "keep", "progress", "device", "workers", "gpus_per_worker", "grad_accum"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run (the defaults are :func:`train`'s and the CLI's).

    method: "first" or "blockrank". objective: "combined" (FIRST: L_LM + 10 x weighted RankNet, or the preset
    weight of `ranking_loss`; BlockRank: L_LM + 0.1 x InfoNCE on the scoring-layer attention), "ranking" (the
    ranking term alone) or "lm" (the LM term alone). ranking_loss (FIRST): ranknet, listnet or lambdarank.
    grade_ties (FIRST): candidates of equal grade are ties in the ranking term (no pair: a negative meets only
    positives; ``FirstObjective.use_grades``) instead of ordered by the teacher order's tie-break, the run's
    order, which otherwise makes most pairs teach the first stage's order among negatives.
    context_size (FIRST): prompt + answer token budget. max_block_tokens (BlockRank): the block size cap, which
    the trained reranker must be run with too.
    full: fine-tune every weight; otherwise LoRA of rank `lora_rank`, alpha `lora_alpha`, dropout
    `lora_dropout` on `lora_targets` (default q, k, v, o projections). init_adapter: a LoRA adapter folder
    (an earlier run's best/ or final/) to start from instead of a fresh adapter, so training can go on from
    weights a run left on another machine; its rank, alpha and targets must be the lora_* settings
    (:func:`adapter_lora_options` reads them), and a resumed run checks it is the same adapter (its sha256).
    skip_lists: where in the seeded stream of training examples the run starts (module docstring); a run going
    on from an adapter of the same examples and seed skips the step x global batch lists that adapter's run saw.
    dtype: "float32", "bfloat16" (autocast) or "auto": bf16 on a GPU that supports it, fp32 on the CPU (on a
    2-core CPU bf16 autocast measured slower than fp32 for a SmolLM2-135M LoRA step; see benchmarks).
    lr: peak learning rate (None: 1e-4 with LoRA, 2e-5 full). warmup_steps / warmup_ratio: linear warm-up
    (default ratio 0.05). max_steps: optimizer steps (None: `epochs` passes over the training examples).
    batch_size: examples per micro-batch; grad_accum: micro-batches per worker and step; the global batch is
    batch_size x grad_accum x workers. max_grad_norm: clip (None: off).
    held_out: queries held out for model selection (an int count or a float fraction; 0: none, then
    DIR/best is the last step). held_out_disjoint: also leave out of training the queries that share a positive
    passage with a held-out query (``split_by_query(disjoint_positives=True)``). eval_every / save_every: steps
    between held-out scores / checkpoints (save_every None: eval_every). keep: checkpoints kept. workers > 1:
    Ray Train (gpus_per_worker each).
    """

    method: str = "first"
    model: str = DEFAULT_MODEL
    objective: str = "combined"
    ranking_loss: str = "ranknet"
    grade_ties: bool = False
    full: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    init_adapter: str | None = None
    skip_lists: int = 0
    dtype: str = "auto"
    device: str | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    held_out: float | int = 0.1
    held_out_disjoint: bool = False
    eval_every: int = 50
    save_every: int | None = None
    keep: int = 2
    seed: int = 0
    context_size: int = 4096
    max_block_tokens: int = 384
    workers: int = 1
    gpus_per_worker: float = 0.0
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("batch_size", "grad_accum", "eval_every", "keep", "workers", "lora_rank", "context_size",
                     "max_block_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.save_every is not None and self.save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {self.save_every}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.skip_lists < 0:
            raise ValueError(f"skip_lists must be >= 0, got {self.skip_lists}")
        if self.grade_ties and (self.method != "first" or self.objective == "lm"):
            raise ValueError("grade_ties applies to FIRST's ranking term (method first, objective combined or ranking)")
        if self.held_out_disjoint and not self.held_out:
            raise ValueError("held_out_disjoint needs held-out queries (a count or fraction above 0)")
        if self.full and self.init_adapter is not None:
            raise ValueError("init_adapter starts LoRA training from an adapter; it cannot start full fine-tuning")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("give the warm-up as steps or as a ratio, not both")
        warmup_steps(1, steps=self.warmup_steps, ratio=self.warmup_ratio)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.workers

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR["full" if self.full else "lora"]

    def total_steps(self, n_train: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_train / self.global_batch))

    def warmup(self, total: int) -> int:
        ratio = 0.05 if self.warmup_steps is None and self.warmup_ratio is None else self.warmup_ratio
        return warmup_steps(total, steps=self.warmup_steps, ratio=ratio)

    def settings(self, examples: Sequence[Any]) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed: every setting that changes the trajectory, the global
        batch, and a fingerprint of the examples."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FREE_SETTINGS}
        out["lora_targets"] = list(self.lora_targets)
        for name in ("skip_lists", "grade_ties", "held_out_disjoint"):
            if not out[name]:  # absent at 0 / off, as in the checkpoints of runs from before the setting existed
                del out[name]
        if self.init_adapter is None:  # absent, as in the checkpoints of runs from before the setting existed
            del out["init_adapter"]
        else:  # what the run starts from, not where it lay
            out["init_adapter"] = _adapter_fingerprint(self.init_adapter)
        out["global_batch"] = self.global_batch
        out["examples"] = examples_fingerprint(examples)
        return json.loads(json.dumps(out))


def examples_fingerprint(examples: Sequence[Any]) -> str:
    """sha256 of what the examples teach: each one's qid, query, candidates (ids and texts) or prompt, order
    and grades."""
    h = hashlib.sha256()
    for e in examples:
        if isinstance(e, ListwiseConversation):
            record = [e.qid, e.system, e.user, list(e.order)]
        else:
            record = [e.qid, e.query.text, [[x.docid, x.title, x.text] for x in e.hits], list(e.order),
                      None if e.grades is None else list(e.grades)]
        h.update(json.dumps(record, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class TrainResult:
    """Where the run wrote its weights, the steps it ran, the held-out history and the best entry."""

    out: Path
    best: Path
    final: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_scores: dict[str, Any] | None = None
    resumed_from: int | None = None


# ------------------------------------------------------------------------------------------ methods


class _Method:
    """Encoding, batching and the loss of one method, bound to a tokenizer."""

    def __init__(self, config: TrainConfig, tokenizer: Any):
        self.config, self.tokenizer = config, tokenizer
        if config.method == "first":
            from rankline.rerankers.training.first_loss import first_objective, identifier_ids

            self.identifiers = identifier_ids(tokenizer)
            self.objective = first_objective(config.objective, config.ranking_loss, use_grades=config.grade_ties)
        else:
            from rankline.rerankers.blockrank import BlockRankOptions
            from rankline.rerankers.training.blockrank_loss import BlockRankObjective

            self.options = BlockRankOptions(max_block_tokens=config.max_block_tokens)
            weights = {"combined": {}, "ranking": {"lm_weight": 0.0, "aux_weight": 1.0}, "lm": {"aux_weight": 0.0}}
            self.objective = BlockRankObjective.from_options(self.options, **weights[config.objective])
        self._cache: dict[int, Any] = {}

    def encode(self, index: int, example: Any) -> Any:
        if index not in self._cache:
            if self.config.method == "first":
                from rankline.rerankers.training.first_loss import encode_first

                self._cache[index] = encode_first(self.tokenizer, example, identifiers=self.identifiers,
                                                  context_size=self.config.context_size)
            else:
                from rankline.rerankers.training.blockrank_loss import encode_blockrank

                self._cache[index] = encode_blockrank(self.tokenizer, example, self.options)
        return self._cache[index]

    def batch(self, encoded: Sequence[Any], device: Any) -> Any:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if self.config.method == "first":
            from rankline.rerankers.training.first_loss import collate_first

            return collate_first(encoded, pad_token_id=pad, identifiers=self.identifiers).to(device)
        from rankline.rerankers.training.blockrank_loss import collate_blockrank

        return collate_blockrank(encoded, scoring_query_tokens=self.objective.scoring_query_tokens,
                                 pad_token_id=pad).to(device)

    def loss(self, model: Any, batch: Any) -> Any:
        if self.config.method == "first":
            from rankline.rerankers.training.first_loss import first_loss

            return first_loss(model, batch, self.objective)
        from rankline.rerankers.training.blockrank_loss import blockrank_loss

        return blockrank_loss(model, batch, self.objective)


def gains(example: Any) -> list[float]:
    """nDCG gains of an example's window positions: its grades, or 1 for the teacher's first alone."""
    grades = getattr(example, "grades", None)
    if grades is not None:
        return [float(g) for g in grades]
    out = [0.0] * len(example.order)
    out[example.order[0]] = 1.0
    return out


def ndcg_at(scores: Sequence[float], gain: Sequence[float], k: int = 10) -> float:
    """nDCG@k (linear gains, as trec_eval) of the order the scores give (equal scores: window position)."""
    order = sorted(range(len(gain)), key=lambda i: (-scores[i], i))
    dcg = sum(gain[i] / math.log2(r + 2) for r, i in enumerate(order[:k]))
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(gain, reverse=True)[:k]))
    return dcg / ideal if ideal > 0 else 0.0


# ------------------------------------------------------------------------------------------- the loop


def _autocast(device: Any, bf16: bool):
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def adapter_lora_options(adapter: str | Path) -> dict[str, Any]:
    """The LoRA settings (TrainConfig's lora_rank, lora_alpha, lora_dropout, lora_targets) of a peft adapter
    folder, for a run that starts from it."""
    from rankline.rerankers.models import check_adapter

    check_adapter(adapter)
    path = Path(adapter).expanduser() / "adapter_config.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        return {"lora_rank": int(found["r"]), "lora_alpha": int(found["lora_alpha"]),
                "lora_dropout": float(found.get("lora_dropout", 0.0)),
                "lora_targets": tuple(sorted(found["target_modules"]))}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a LoRA adapter config ({type(exc).__name__}: {exc})") from None


def _adapter_fingerprint(adapter: str | Path) -> str:
    from rankline.rerankers.models import check_adapter

    return "sha256:" + hashlib.sha256(check_adapter(adapter).read_bytes()).hexdigest()


def resolve_dtype(dtype: str, device: Any) -> bool:
    """Whether to run the forward pass under bf16 autocast."""
    import torch

    if dtype == "bfloat16":
        return True
    if dtype == "float32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def build_model(config: TrainConfig, device: Any) -> tuple[Any, Any]:
    """(model ready to train, tokenizer): the base in fp32 and, unless `full`, wrapped with a LoRA adapter: fresh
    (initialised from torch's generator, seeded by the caller) or `init_adapter`'s weights."""
    from rankline.rerankers.models import load_causal_lm

    lm = load_causal_lm(config.model, device=str(device), dtype="float32")
    model = lm.model
    model.config.use_cache = False
    if config.full:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.lora_targets), bias="none", task_type="CAUSAL_LM")
        if config.init_adapter is None:
            model = get_peft_model(model, lora)
        else:
            model = _load_init_adapter(model, lora, config)
    model.train()
    return model, lm.tokenizer


def _load_init_adapter(model: Any, lora: Any, config: TrainConfig) -> Any:
    from peft import PeftModel

    found = adapter_lora_options(config.init_adapter)
    ours = {"lora_rank": config.lora_rank, "lora_alpha": config.lora_alpha,
            "lora_targets": tuple(sorted(config.lora_targets))}
    for name, value in ours.items():
        if found[name] != value:
            raise ValueError(f"{config.init_adapter}: the adapter has {name} {found[name]!r}, the run {value!r}; "
                             f"train with the adapter's LoRA settings")
    try:
        return PeftModel.from_pretrained(model, str(Path(config.init_adapter).expanduser()), config=lora,
                                         is_trainable=True)
    except Exception as exc:  # another base model's adapter: peft's shape errors run over many lines
        raise ValueError(f"{config.init_adapter}: cannot start from this adapter on model {config.model!r}: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc


def _stream_indices(step: int, global_batch: int, n: int, seed: int, perms: dict[int, list[int]],
                    skip: int = 0) -> list[int]:
    out = []
    for position in range(skip + step * global_batch, skip + (step + 1) * global_batch):
        epoch, offset = divmod(position, n)
        if epoch not in perms:
            perm = list(range(n))
            random.Random(f"{seed}/epoch/{epoch}").shuffle(perm)
            perms[epoch] = perm
        out.append(perms[epoch][offset])
    return out


def evaluate(model: Any, method: _Method, examples: Sequence[Any], *, device: Any, bf16: bool, batch_size: int = 1,
             offset: int = 0) -> dict[str, float]:
    """Held-out scores of `model` (module docstring): loss, top1, nDCG@10; the model is left in train mode."""
    import torch

    model.eval()
    totals = {"loss": 0.0, "top1": 0.0, "ndcg@10": 0.0}
    try:
        with torch.no_grad(), _autocast(device, bf16):
            for start in range(0, len(examples), batch_size):
                chunk = examples[start:start + batch_size]
                encoded = [method.encode(offset + start + j, e) for j, e in enumerate(chunk)]
                out = method.loss(model, method.batch(encoded, device))
                totals["loss"] += float(out.loss) * len(chunk)
                totals["top1"] += float(out.top1.float().sum())
                scores = out.scores.float().cpu().tolist()
                for row, e in zip(scores, chunk):
                    g = gains(e)
                    totals["ndcg@10"] += ndcg_at(row[:len(g)], g)
    finally:
        model.train()
    return {k: v / max(1, len(examples)) for k, v in totals.items()}


def _better(new: dict[str, float], old: dict[str, Any] | None) -> bool:
    if old is None:
        return True
    return (new["ndcg@10"], -new["loss"]) > (old["ndcg@10"], -old["loss"])


def _save_weights(model: Any, tokenizer: Any, config: TrainConfig, target: Path, info: dict[str, Any]) -> None:
    """DIR/best or DIR/final: an adapter folder (LoRA) or a model folder (full), written atomically."""
    tmp = ckpt.temp_folder(target)
    model.save_pretrained(tmp)
    if config.full:
        tokenizer.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    ckpt.replace_folder(tmp, target)


def train(
    config: TrainConfig,
    examples: Sequence[RankingExample | ListwiseConversation],
    out: str | Path,
    *,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on `examples` into `out` (module docstring). `callback(step, metrics)` is called after each
    optimizer step (1-based step) and after its checkpoint, if any, is written. With `workers` > 1 the loop
    runs on Ray Train (see :func:`train_on_ray`; Ray must be started, e.g. by the CLI)."""
    if config.workers > 1 or config.gpus_per_worker > 0:
        return train_on_ray(config, examples, out)
    return train_loop(config, examples, out, callback=callback)


def train_loop(*args: Any, **kwargs: Any) -> TrainResult:
    """The training loop of one worker (`rank` of `world`; a torch.distributed process group must be set up when
    world > 1). Rank 0 writes every file. torch's deterministic-algorithms switch is set for the run (config) and
    restored after."""
    import torch

    config = args[0] if args else kwargs["config"]
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(config.deterministic, warn_only=True)
    try:
        return _train_loop(*args, **kwargs)
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)


def _train_loop(
    config: TrainConfig,
    examples: Sequence[Any],
    out: str | Path,
    *,
    rank: int = 0,
    world: int = 1,
    device: Any = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    import numpy as np
    import torch

    out = Path(out)
    if config.method == "blockrank" and any(isinstance(e, ListwiseConversation) for e in examples):
        raise ValueError("BlockRank trains on examples with grades (qrels + run or BlockRank JSONL), "
                         "not on ShareGPT conversations")
    if config.grade_ties and any(getattr(e, "grades", None) is None for e in examples):
        raise ValueError("grade_ties needs graded examples (qrels + a run, or BlockRank JSONL), "
                         "not rankings without grades")
    if world != config.workers:
        raise ValueError(f"{world} workers run, the config says {config.workers}")
    train_set, held = split_by_query(list(examples), held_out=config.held_out, seed=config.seed,
                                     disjoint_positives=config.held_out_disjoint) \
        if config.held_out else (list(examples), [])
    if not train_set:
        raise ValueError("no training examples")
    if config.held_out_disjoint and rank == 0:
        counts = [len({e.qid for e in part}) for part in (examples, train_set, held)]
        print(f"held out {counts[2]} queries; training queries left out for sharing a positive passage with them: "
              f"{counts[0] - counts[1] - counts[2]}", file=sys.stderr)
    settings = config.settings(examples)
    total = config.total_steps(len(train_set))
    device = torch.device(device or config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = resolve_dtype(config.dtype, device)

    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    model, tokenizer = build_model(config, device)
    method = _Method(config, tokenizer)
    # Every example is encoded (and so checked: a query too long for its block, a prompt over the context)
    # before the first step, so a bad one stops the run at once, not hours into it.
    for i, example in enumerate(train_set + held):
        method.encode(i, example)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in trainable]
    optimizer = torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, warmup=config.warmup(total), total=total)

    root = out / "checkpoints"
    start, history, best, resumed = 0, [], None, None
    found = ckpt.list_checkpoints(root)
    if found:
        step, folder = found[-1]
        weights, opt_state, sched_state, tstates, state = ckpt.load_checkpoint(folder, settings)
        by_name = dict(trainable)
        missing = sorted(set(by_name) - set(weights))
        if missing or set(weights) - set(by_name):
            raise ValueError(f"{folder}: its weights do not match the model's trainable tensors "
                             f"({(missing or sorted(set(weights) - set(by_name)))[0]!r})")
        with torch.no_grad():
            for name, p in trainable:
                p.copy_(weights[name].to(p.device, p.dtype))
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(sched_state)
        ckpt.restore_rng(state.python_rng, state.numpy_rng, tstates)
        start, history, best, resumed = state.step, state.history, state.best, state.step
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    if rank == 0 and held:
        with atomic_write(out / "held-out-qids.txt") as f:
            f.write("".join(f"{qid}\n" for qid in dict.fromkeys(e.qid for e in held)))

    save_every = config.save_every or config.eval_every
    micro = [list(range(k * config.batch_size, (k + 1) * config.batch_size))
             for k in range(config.grad_accum * world)]
    mine = micro[rank::world]
    scale = 1.0 / (config.grad_accum * world)
    perms: dict[int, list[int]] = {}
    tokens, t0 = 0, time.perf_counter()
    progress = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm

        progress = tqdm(total=total, initial=start, desc=f"train {config.method}", unit="step", dynamic_ncols=True)

    def save(step: int) -> None:
        if rank == 0:
            weights = {n: p for n, p in trainable}
            ckpt.save_checkpoint(root, step, weights=weights, optimizer=optimizer, scheduler=scheduler,
                                 history=history, best=best, settings=settings, keep=config.keep)
        _barrier(world)

    def score_held_out(done: int) -> None:
        nonlocal best
        if rank == 0:
            scores = evaluate(model, method, held, device=device, bf16=bf16, batch_size=config.batch_size,
                              offset=len(train_set))
            entry = {"step": done, **scores}
            history.append(entry)
            if _better(scores, best):
                best = entry
                _save_weights(model, tokenizer, config, out / "best",
                              {"step": done, "held_out": scores, "settings": settings})
            with atomic_write(out / "held-out.json") as f:
                f.write(json.dumps({"history": history, "best": best}, indent=1) + "\n")
            if progress is not None:
                progress.write(f"step {done}: held-out loss {scores['loss']:.4f} top1 {scores['top1']:.3f} "
                               f"nDCG@10 {scores['ndcg@10']:.4f}")
        _barrier(world)

    if held and start == 0:  # the starting weights' scores start the curve: a step is best only if it beats them
        score_held_out(0)
    applied = start  # steps whose update is in the weights
    try:
        for step in range(start, total):
            batch_indices = _stream_indices(step, config.global_batch, len(train_set), config.seed, perms,
                                            config.skip_lists)
            losses = []
            for slots in mine:
                chosen = [batch_indices[s] for s in slots]
                encoded = [method.encode(i, train_set[i]) for i in chosen]
                batch = method.batch(encoded, device)
                with _autocast(device, bf16):
                    result = method.loss(model, batch)
                (result.loss * scale).backward()
                losses.append(float(result.loss.detach()))
                tokens += batch.num_tokens
            if world > 1:
                _all_reduce_grads(params)
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm else None
            with ckpt.uninterrupted():
                optimizer.step()
                scheduler.step()
                applied = step + 1
            optimizer.zero_grad(set_to_none=True)
            metrics = {"loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0]}
            if norm is not None:
                metrics["grad_norm"] = float(norm)
            done = step + 1
            if held and (done % config.eval_every == 0 or done == total):
                score_held_out(done)
            if done % save_every == 0 or done == total:
                save(done)
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{tokens * world / max(elapsed, 1e-9):.0f}",
                                     lr=f"{metrics['lr']:.2e}")
                progress.update(1)
            if callback is not None:
                callback(done, metrics)
    except KeyboardInterrupt:
        last = ckpt.list_checkpoints(root)  # a step cut short before its update is dropped
        if applied > start and (not last or last[-1][0] < applied):
            optimizer.zero_grad(set_to_none=True)
            save(applied)
        raise
    finally:
        if progress is not None:
            progress.close()

    final_info = {"step": total, "settings": settings}
    if rank == 0:
        _save_weights(model, tokenizer, config, out / "final", final_info)
        if not held:
            _save_weights(model, tokenizer, config, out / "best", {**final_info, "held_out": None})
    _barrier(world)
    return TrainResult(out, out / "best", out / "final", total, history, best, resumed)


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _all_reduce_grads(params: Sequence[Any]) -> None:
    """Sum every trainable gradient over the workers in one flat all-reduce (the losses are already scaled by
    1 / (grad_accum x workers), so the sum is the mean gradient of the global batch)."""
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


# ------------------------------------------------------------------------------------------- Ray Train


def _ray_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import torch

    ctx = ray.train.get_context()
    config = TrainConfig(**loop_config["config"])
    device = None
    if config.gpus_per_worker > 0:
        from ray.train.torch import get_device

        device = get_device()
    else:
        device = torch.device("cpu")
    train_loop(config, loop_config["examples"], loop_config["out"], rank=ctx.get_world_rank(),
               world=ctx.get_world_size(), device=device)


def train_on_ray(config: TrainConfig, examples: Sequence[Any], out: str | Path) -> TrainResult:
    """Data-parallel training on Ray Train: a ``TorchTrainer`` of `config.workers` workers (1 CPU and
    `gpus_per_worker` GPUs each; gloo on CPUs, NCCL on GPUs) each running :func:`train_loop` on its share of every
    global batch. Rank 0 writes `out`, which must be a folder every worker sees (one machine, or shared storage)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(out).resolve()
    use_gpu = config.gpus_per_worker > 0
    resources = {"CPU": 1, **({"GPU": config.gpus_per_worker} if use_gpu else {})}
    loop_config = {"config": {**asdict(config), "progress": False}, "examples": list(examples), "out": str(out)}
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name="rankline-train", storage_path=str(out / "ray")),
    )
    trainer.fit()
    manifest = ckpt.verify(ckpt.list_checkpoints(out / "checkpoints")[-1][1])
    state = json.loads((ckpt.list_checkpoints(out / "checkpoints")[-1][1] / "state.json").read_text())
    return TrainResult(out, out / "best", out / "final", manifest["step"], state["history"], state["best"])
