"""The FIRST training objective (Reddy et al. 2024; castorini rank_llm ``training/``): a causal LM learns to
write the teacher ranking of a window, and its logits at the position that predicts the first identifier
learn to order the window, which is all FIRST inference reads.

**An example** is the window's RankZephyr prompt exactly as :class:`rankline.rerankers.FirstReranker` builds it
(``fit_listwise_prompt``, passages labelled [A], [B], ...) followed by ``"["`` — inference's engine input,
tokenized the same way — then the rest of the teacher ranking ``C] > [A] > ...`` and the tokenizer's EOS.
Prompt tokens get label -100. The first target token is the single-token identifier of the best passage
(:func:`identifier_ids`); were a tokenizer to merge it with what follows, it is split off so that the
language-modelling target and the ranking read-out agree. A rank_llm ShareGPT record keeps its own user turn
and is rendered with the same chat rendering as inference (``prompts.render_chat``).

**The losses** (:class:`FirstObjective`):

- ``L_LM``: mean next-token cross-entropy over all target tokens of the batch (token mean, as transformers'
  own loss with the prompt labelled -100; fp32);
- ``L_rank``: a ranking loss (``ranking_losses``: weighted RankNet by default, ListNet, LambdaRank) on
  ``s_i`` = the logit of identifier i at the position of the trailing ``"["`` — the position whose logits
  predict the first identifier — located per row, whatever the padding side and in every mode;
- ``L = lm_weight * L_LM + ranking_weight * L_rank``; the presets of :func:`first_objective` are rank_llm's:
  combined = L_LM + 10 x weighted RankNet (ListNet 0.1, LambdaRank 1), ranking only (weight 1), LM only.

:func:`first_loss` runs the model and keeps logits only where a loss reads them (``logits_to_keep``), and
returns every component separately (:class:`FirstLossOutput`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from rankline.rerankers.first import identifier_token_ids
from rankline.rerankers.prompts import MAX_IDENTIFIERS, Passage, fit_listwise_prompt, identifier, render_chat
from rankline.rerankers.training.data import ListwiseConversation, RankingExample
from rankline.rerankers.training.ranking_losses import (
    LAMBDARANK_SCHEMES,
    RANKING_LOSSES,
    pair_counts,
    ranking_loss,
    teacher_ranks,
    widened,
)

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
FIRST_MODES = ("combined", "ranking", "lm")
# rank_llm's weights of the ranking term in its combined objective (training/utils/train_utils.py).
COMBINED_RANKING_WEIGHT = {"ranknet": 10.0, "listnet": 0.1, "lambdarank": 1.0}


def identifier_ids(tokenizer: Any, n: int = MAX_IDENTIFIERS) -> list[int]:
    """One token id per window position 0..n-1: the identifier token the tokenizer writes right after "["
    (for "[C]", the token of "C"), among the single-letter tokens of ``rerankers.first.identifier_token_ids``;
    without such a token in context, the tokenizer's own token for the letter, else the smallest variant."""
    variants: dict[int, list[int]] = {}
    for token_id, position in identifier_token_ids(tokenizer).items():
        variants.setdefault(position, []).append(token_id)
    opening = tokenizer.encode("[", add_special_tokens=False)
    out = []
    for position in range(n):
        letter = identifier(position)
        candidates = variants.get(position, [])
        if not candidates:
            raise ValueError(f"the tokenizer has no single token for the identifier {letter!r}")
        in_context = tokenizer.encode(f"[{letter}]", add_special_tokens=False)
        own = tokenizer.convert_tokens_to_ids(letter)
        if in_context[: len(opening)] == opening and len(in_context) > len(opening) and in_context[len(opening)] in candidates:
            out.append(in_context[len(opening)])
        elif own in candidates:
            out.append(own)
        else:
            out.append(min(candidates))
    return out


@dataclass(frozen=True)
class FirstEncoded:
    """One tokenized example: `input_ids` = prompt + "[" (the first `prompt_length` tokens, inference's input)
    then the target; `ranks[i]` the teacher rank of window position i (1 = best); `grades` or None."""

    input_ids: tuple[int, ...]
    prompt_length: int
    ranks: tuple[int, ...]
    grades: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_ids(self) -> tuple[int, ...]:
        return self.input_ids[self.prompt_length:]


def first_prompt(tokenizer: Any, example: RankingExample | ListwiseConversation, *, context_size: int = 4096) -> str:
    """The rendered prompt (without the trailing "["): for an example, FIRST inference's fitted prompt of its
    window, with room for the answer and EOS in `context_size`; for a ShareGPT record, its turns as given."""
    if isinstance(example, ListwiseConversation):
        return render_chat(tokenizer, example.messages())
    passages = [Passage(h.text, h.title) for h in example.hits]
    return fit_listwise_prompt(tokenizer, example.query.text, passages, context_size=context_size - 1, token_budget=True)


def encode_first(
    tokenizer: Any,
    example: RankingExample | ListwiseConversation,
    *,
    identifiers: Sequence[int] | None = None,
    context_size: int = 4096,
) -> FirstEncoded:
    """Tokenize an example for FIRST training (module docstring). `identifiers`: :func:`identifier_ids` of the
    tokenizer (computed when not given; pass it when encoding many examples)."""
    order = list(example.order)
    n = len(order)
    if n > MAX_IDENTIFIERS:
        raise ValueError(f"query {example.qid!r}: a FIRST window holds at most {MAX_IDENTIFIERS} passages, got {n}")
    identifiers = list(identifiers) if identifiers is not None else identifier_ids(tokenizer, n)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to end the ranking with")
    engine_input = first_prompt(tokenizer, example, context_size=context_size) + "["
    prompt_ids = tokenizer.encode(engine_input)
    rest = example.ranking_string()[1:]  # "C] > [A] > ..."
    first = identifiers[order[0]]
    whole = tokenizer.encode(engine_input + rest)
    if whole[: len(prompt_ids)] == prompt_ids and len(whole) > len(prompt_ids) and whole[len(prompt_ids)] == first:
        target = whole[len(prompt_ids):]
    else:  # the tokenizer merges across the boundary: keep inference's prompt and the identifier token apart
        target = [first, *tokenizer.encode(rest[1:], add_special_tokens=False)]
    if target[-1] != eos:
        target.append(eos)
    grades = getattr(example, "grades", None)
    return FirstEncoded(
        input_ids=tuple(prompt_ids + target),
        prompt_length=len(prompt_ids),
        ranks=tuple(teacher_ranks(order)),
        grades=None if grades is None else tuple(float(g) for g in grades),
    )


@dataclass
class FirstBatch:
    """A padded batch of :class:`FirstEncoded` (tensors [B, T] unless said otherwise).

    labels: -100 on prompt and padding. rank_positions [B]: index of each row's trailing "[" token, whose
    logits predict the first identifier. identifier_ids [N]: the token read for window position i.
    ranks [B, N]: teacher ranks, 0 on the slots past a row's window. grades [B, N] or None (None unless every
    example has grades).
    """

    input_ids: Any
    attention_mask: Any
    position_ids: Any
    labels: Any
    rank_positions: Any
    identifier_ids: Any
    ranks: Any
    grades: Any = None

    def model_inputs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    def to(self, device: Any) -> "FirstBatch":
        moved = {k: (v.to(device) if v is not None else None) for k, v in vars(self).items()}
        return FirstBatch(**moved)

    @property
    def num_tokens(self) -> int:
        """Real (not padding) tokens of the batch."""
        return int(self.attention_mask.sum())

    @property
    def num_target_tokens(self) -> int:
        """Tokens the LM term is computed on."""
        return int((self.labels != IGNORE_INDEX).sum())


def collate_first(
    encoded: Sequence[FirstEncoded],
    *,
    pad_token_id: int,
    identifiers: Sequence[int],
    padding_side: str = "left",
) -> FirstBatch:
    """Pad examples into a :class:`FirstBatch`. Position ids count real tokens only, so each row is computed as
    it would be alone, on either side. Left padding (the default, as inference) lines the targets up at the end,
    which keeps the logits that :func:`first_loss` computes few."""
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not encoded:
        raise ValueError("an empty batch")
    B, T = len(encoded), max(len(e) for e in encoded)
    N = max(len(e.ranks) for e in encoded)
    if N > len(identifiers):
        raise ValueError(f"windows of {N} passages need {N} identifier ids, got {len(identifiers)}")
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    rank_positions = torch.zeros(B, dtype=torch.long)
    ranks = torch.zeros((B, N), dtype=torch.long)
    with_grades = all(e.grades is not None for e in encoded)
    grades = torch.zeros((B, N), dtype=torch.float32) if with_grades else None
    for row, e in enumerate(encoded):
        start = T - len(e) if padding_side == "left" else 0
        ids = torch.tensor(e.input_ids, dtype=torch.long)
        input_ids[row, start:start + len(e)] = ids
        mask[row, start:start + len(e)] = 1
        labels[row, start + e.prompt_length:start + len(e)] = ids[e.prompt_length:]
        rank_positions[row] = start + e.prompt_length - 1
        ranks[row, :len(e.ranks)] = torch.tensor(e.ranks)
        if grades is not None:
            grades[row, :len(e.grades)] = torch.tensor(e.grades)
    return FirstBatch(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
        labels=labels,
        rank_positions=rank_positions,
        identifier_ids=torch.tensor(list(identifiers[:N]), dtype=torch.long),
        ranks=ranks,
        grades=grades,
    )


@dataclass(frozen=True)
class FirstObjective:
    """``L = lm_weight * L_LM + ranking_weight * L_rank``. ranking_loss: one of RANKING_LOSSES or None (LM only);
    lm_weight 0: ranking only (no full logits are computed). weighted: RankNet's 1/(r_i + r_j).
    listnet_temperature, lambdarank_scheme, sigma: see ranking_losses. use_grades: pass the examples' grades
    to the ranking loss, so that equal grades are ties (no pair) instead of the teacher order's tie-break."""

    lm_weight: float = 1.0
    ranking_loss: str | None = "ranknet"
    ranking_weight: float = 10.0
    weighted: bool = True
    listnet_temperature: float = 1.0
    lambdarank_scheme: str = "delta_ndcg"
    sigma: float = 1.0
    use_grades: bool = False

    def __post_init__(self) -> None:
        if self.ranking_loss is not None and self.ranking_loss not in RANKING_LOSSES:
            raise ValueError(f"ranking_loss must be one of {RANKING_LOSSES} or None, got {self.ranking_loss!r}")
        if self.lambdarank_scheme not in LAMBDARANK_SCHEMES:
            raise ValueError(f"lambdarank_scheme must be one of {LAMBDARANK_SCHEMES}, got {self.lambdarank_scheme!r}")
        if self.lm_weight < 0 or self.ranking_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if not self.uses_lm and not self.uses_ranking:
            raise ValueError("the objective has no term: enable the LM term or a ranking loss")

    @property
    def uses_lm(self) -> bool:
        return self.lm_weight > 0

    @property
    def uses_ranking(self) -> bool:
        return self.ranking_loss is not None and self.ranking_weight > 0


def first_objective(mode: str = "combined", ranking_loss: str = "ranknet", **options: Any) -> FirstObjective:
    """rank_llm's objectives: "combined" (L_LM + w x ranking, w = 10 for weighted RankNet, 0.1 ListNet,
    1 LambdaRank or unweighted RankNet), "ranking" (ranking loss alone, weight 1), "lm" (L_LM alone)."""
    if mode not in FIRST_MODES:
        raise ValueError(f"mode must be one of {FIRST_MODES}, got {mode!r}")
    if mode == "lm":
        return FirstObjective(lm_weight=1.0, ranking_loss=None, **options)
    if mode == "ranking":
        return FirstObjective(lm_weight=0.0, ranking_loss=ranking_loss, ranking_weight=1.0, **options)
    weighted = options.get("weighted", True)
    weight = COMBINED_RANKING_WEIGHT[ranking_loss] if (ranking_loss != "ranknet" or weighted) else 1.0
    return FirstObjective(lm_weight=1.0, ranking_loss=ranking_loss, ranking_weight=weight, **options)


@dataclass
class FirstLossOutput:
    """loss: what to backpropagate. lm_loss / ranking_loss: the unweighted components (None when off).
    scores [B, N]: identifier logits at the first-identifier position (detached; padded slots -inf).
    ordered_pairs / tied_pairs [B]: pairs that gave a term and pairs the tie rule left out."""

    loss: "torch.Tensor"
    lm_loss: "torch.Tensor | None"
    ranking_loss: "torch.Tensor | None"
    scores: "torch.Tensor"
    ordered_pairs: "torch.Tensor"
    tied_pairs: "torch.Tensor"
    top1: "torch.Tensor"  # [B] bool: the highest-scored identifier is the teacher's first

    def metrics(self) -> dict[str, float]:
        out = {"loss": float(self.loss.detach())}
        if self.lm_loss is not None:
            out["lm_loss"] = float(self.lm_loss.detach())
        if self.ranking_loss is not None:
            out["ranking_loss"] = float(self.ranking_loss.detach())
        out["top1"] = float(self.top1.float().mean())
        out["tied_pairs"] = float(self.tied_pairs.sum())
        return out


def lm_loss(logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
    """Mean next-token cross-entropy (at least fp32) over the labelled tokens of the batch: logits [B, T, V] at t predict
    labels[:, t + 1]; -100 is ignored. Equals transformers' causal-LM loss for the same labels."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    return F.cross_entropy(widened(logits[:, :-1]).flatten(0, 1), shifted.flatten(), ignore_index=IGNORE_INDEX)



def _kept_positions(batch: FirstBatch, objective: FirstObjective) -> "torch.Tensor":
    """Sorted positions whose logits some loss reads: the rank positions and, with the LM term, every position
    whose next token is a target."""
    import torch

    keep = batch.rank_positions
    if objective.uses_lm:
        predicts = (batch.labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()[:, 0]
        keep = torch.cat([keep, predicts])
    return torch.unique(keep)


def _losses(logits: "torch.Tensor", kept: "torch.Tensor", batch: FirstBatch, objective: FirstObjective) -> FirstLossOutput:
    """Losses from logits [B, K, V] at positions `kept` [K] (sorted)."""
    import torch
    import torch.nn.functional as F

    B, T = batch.labels.shape
    lm = None
    if objective.uses_lm:
        following = kept + 1
        inside = following < T
        next_labels = torch.full((B, len(kept)), IGNORE_INDEX, dtype=torch.long, device=batch.labels.device)
        next_labels[:, inside] = batch.labels[:, following[inside]]
        lm = F.cross_entropy(widened(logits).flatten(0, 1), next_labels.flatten(), ignore_index=IGNORE_INDEX)
    column = torch.searchsorted(kept, batch.rank_positions)
    at = widened(logits[torch.arange(B, device=logits.device), column])  # [B, V]
    scores = at[:, batch.identifier_ids.to(at.device)]
    grades = batch.grades if objective.use_grades else None
    ranking = None
    if objective.uses_ranking:
        ranking = ranking_loss(
            objective.ranking_loss, scores, batch.ranks, grades=grades, weighted=objective.weighted,
            temperature=objective.listnet_temperature, sigma=objective.sigma, scheme=objective.lambdarank_scheme,
        )
    ordered, tied = pair_counts(batch.ranks.to(scores.device), None if grades is None else grades.to(scores.device))
    total = None
    for weight, term, used in ((objective.lm_weight, lm, objective.uses_lm),
                               (objective.ranking_weight, ranking, objective.uses_ranking)):
        if used:
            total = weight * term if total is None else total + weight * term
    shown = scores.detach().masked_fill(batch.ranks.to(scores.device) == 0, float("-inf"))
    best = batch.ranks.to(scores.device).masked_fill(batch.ranks.to(scores.device) == 0, 10**9).argmin(dim=1)
    return FirstLossOutput(total, lm, ranking, shown, ordered, tied, shown.argmax(dim=1) == best)


def first_loss(model: Any, batch: FirstBatch, objective: FirstObjective = FirstObjective()) -> FirstLossOutput:
    """Run `model` (any transformers causal LM, PEFT-wrapped or not) on `batch` and compute the objective. Only
    the logits a loss reads are computed (``logits_to_keep``); without the LM term, one position per row."""
    kept = _kept_positions(batch, objective).to(batch.input_ids.device)
    logits = model(**batch.model_inputs(), use_cache=False, logits_to_keep=kept).logits
    return _losses(logits, kept, batch, objective)


def first_loss_from_logits(
    logits: "torch.Tensor", batch: FirstBatch, objective: FirstObjective = FirstObjective()
) -> FirstLossOutput:
    """The objective from full logits [B, T, V] that the caller computed."""
    import torch

    return _losses(logits, torch.arange(logits.shape[1], device=logits.device), batch, objective)
