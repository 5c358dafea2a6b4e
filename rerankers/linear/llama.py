"""Linearised attention for the Llama architecture (SmolLM2 is Llama), and linearised model folders.

``LinearisedLlamaAttention`` replaces a ``LlamaAttention``: the same q/k/v/o projections and RoPE, then
``hybrid_attention`` (attention.py) with, per head, Hedgehog feature maps for queries and keys (weights [D, D]
initialised to the identity), a window mixing factor sigmoid(alpha_h) (alpha initialised to 0, as LoLCATs) and a
log decay: ``none`` (0), ``fixed`` (lightning's TransNormer schedule) or ``learned`` (-exp(p_h), p initialised
from that schedule).

Generation: transformers hands every layer its ``Cache``; a linearised layer keeps its ``HybridState`` (fixed
size: the linear state and a W-token window) in a weak dictionary keyed by that cache object, and layer 0 records
one byte per token in the cache's first slot so transformers' position and mask bookkeeping
(``get_seq_length``) works. A prompt runs the parallel form; each later single token runs the recurrent step.

A linearised folder is a Hugging Face model folder (config, weights, tokenizer) plus ``linear_attention.json``
(the settings) and ``linear_attention.safetensors`` (feature maps, mixing factors, decay parameters), so
``load_causal_lm(DIR)`` loads it (``load_linearised``).
"""
from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rankline.kernels import transnormer_log_decay
from rankline.rerankers.linear import SETTINGS_FILE
from rankline.rerankers.linear.attention import HybridState, hedgehog_features, hybrid_attention, hybrid_attention_step

WEIGHTS_FILE = "linear_attention.safetensors"
DECAYS = ("none", "fixed", "learned")
FORMAT = 1


@dataclass(frozen=True)
class LinearSettings:
    """How attention is linearised: the softmax window W (0: linear only) and the decay kind."""

    window: int = 64
    decay: str = "none"
    feature_map: str = "hedgehog"

    def check(self) -> None:
        if not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"window must be an integer >= 0, got {self.window!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.feature_map != "hedgehog":
            raise ValueError(f"feature_map must be 'hedgehog', got {self.feature_map!r}")


class LinearisedLlamaAttention(nn.Module):
    """A ``LlamaAttention`` (module docstring) whose attention is ``hybrid_attention``; only the feature maps,
    the mixing factors and a learned decay are new parameters (``transfer_parameters``)."""

    def __init__(self, base: nn.Module, settings: LinearSettings, num_layers: int):
        super().__init__()
        settings.check()
        config = base.config
        self.config, self.layer_idx, self.settings = config, base.layer_idx, settings
        self.head_dim = base.head_dim
        self.num_heads = config.num_attention_heads
        self.groups = base.num_key_value_groups
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = base.q_proj, base.k_proj, base.v_proj, base.o_proj
        weight = base.q_proj.weight
        eye = torch.eye(self.head_dim, dtype=weight.dtype, device=weight.device).expand(self.num_heads, -1, -1)
        self.feature_q = nn.Parameter(eye.clone())
        self.feature_k = nn.Parameter(eye.clone())
        self.window_alpha = nn.Parameter(torch.zeros(self.num_heads, dtype=weight.dtype, device=weight.device)) \
            if settings.window else None
        schedule = transnormer_log_decay(self.num_heads, self.layer_idx, num_layers).to(weight.device)
        self.decay_param = nn.Parameter(torch.log(-schedule).to(weight.dtype)) if settings.decay == "learned" else None
        self.register_buffer("fixed_decay", schedule if settings.decay == "fixed" else torch.zeros_like(schedule))
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def transfer_parameters(self) -> list[nn.Parameter]:
        """What attention transfer trains: feature maps, mixing factors, a learned decay."""
        return [p for p in (self.feature_q, self.feature_k, self.window_alpha, self.decay_param) if p is not None]

    def log_decay(self) -> torch.Tensor:
        return -torch.exp(self.decay_param) if self.decay_param is not None else self.fixed_decay

    def window_factor(self) -> torch.Tensor | None:
        return None if self.window_alpha is None else torch.sigmoid(self.window_alpha)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None = None, cache: Any = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        B, T, _ = hidden_states.shape
        shape = (B, T, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        k, v = repeat_kv(k, self.groups), repeat_kv(v, self.groups)
        fq, fk = hedgehog_features(q, self.feature_q), hedgehog_features(k, self.feature_k)
        valid = _key_valid(attention_mask, T)
        args = dict(window_factor=self.window_factor(), log_decay=self.log_decay(), key_valid=valid)
        state = None if cache is None else self._states.get(cache)
        if state is not None and T == 1:
            y, state = hybrid_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], fq[:, :, 0], fk[:, :, 0], state,
                                             **{**args, "key_valid": None if valid is None else valid[:, 0]})
            y = y[:, :, None]
        else:
            y, state = hybrid_attention(q, k, v, fq, fk, window=self.settings.window, state=state, **args)
        if cache is not None:
            self._states[cache] = _detached(state)
            if self.layer_idx == 0:  # one byte per token: transformers counts the sequence from slot 0
                marker = torch.zeros(B, 1, T, 1, dtype=torch.uint8, device=q.device)
                cache.update(marker, marker, 0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), None


def _detached(state: HybridState) -> HybridState:
    """The state to keep, detached and copied: the parallel form's window tensors are views into the whole
    sequence's keys, values and features, which a kept view would hold in memory (the state would grow with the
    prompt instead of being fixed-size)."""
    return HybridState(*(x.detach().clone() for x in (state.linear, state.keys, state.values, state.features,
                                                       state.valid)))


def _key_valid(mask: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """Which of the T new tokens are real (not padding), from the mask transformers passes to attention: a 4-D
    mask's last query row sees every real key (bool: True = attend; float: 0 = attend), a 2-D mask is per token."""
    if mask is None:
        return None
    row = mask[:, -T:] if mask.dim() == 2 else mask[:, 0, -1, -T:]
    return row.bool() if row.dtype in (torch.bool, torch.long, torch.int) else row == 0


def linearise(model: nn.Module, settings: LinearSettings) -> list[LinearisedLlamaAttention]:
    """Replace every attention layer of a Llama causal LM by a ``LinearisedLlamaAttention`` (in place); returns them."""
    if getattr(model.config, "model_type", None) != "llama":
        raise ValueError(f"linearisation supports the Llama architecture, got model_type "
                         f"{getattr(model.config, 'model_type', None)!r}")
    layers = model.model.layers
    converted = []
    for layer in layers:
        layer.self_attn = LinearisedLlamaAttention(layer.self_attn, settings, len(layers))
        converted.append(layer.self_attn)
    return converted


def linear_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a linearisation adds (feature maps, mixing factors, decay), by their names in the model."""
    names = {"feature_q", "feature_k", "window_alpha", "decay_param", "fixed_decay"}
    return {name: t for name, t in model.state_dict().items() if name.rsplit(".", 1)[-1] in names}


def save_linearised(model: nn.Module, tokenizer: Any, settings: LinearSettings, out: Path, *,
                    base_dtype: torch.dtype | None = None, transfer: dict[str, Any] | None = None) -> None:
    """Write the folder (module docstring) into ``out``: the base weights under their usual names (in
    ``base_dtype``, default as they are), the tokenizer, the settings (with ``transfer``, how the added tensors
    were trained) and the added tensors, as they are."""
    from safetensors.torch import save_file

    added = linear_state_dict(model)
    base = {name: t if base_dtype is None else t.to(base_dtype)
            for name, t in model.state_dict().items() if name not in added}
    model.save_pretrained(out, state_dict=base)
    tokenizer.save_pretrained(out)
    save_file({k: v.detach().contiguous().cpu() for k, v in added.items()}, str(out / WEIGHTS_FILE))
    record = {"format": FORMAT, **asdict(settings), "transfer": transfer}
    (out / SETTINGS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_settings(path: str | Path) -> LinearSettings:
    file = Path(path) / SETTINGS_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        if raw.pop("format", None) != FORMAT:
            raise ValueError(f"expected format {FORMAT}")
        raw.pop("transfer", None)
        settings = LinearSettings(**raw)
        settings.check()
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: not a linear-attention settings file this rankline reads ({exc})") from None
    return settings


def load_linearised(model: nn.Module, path: str | Path) -> None:
    """Linearise ``model`` (loaded from the folder ``path``) with the folder's settings and load its added tensors."""
    from safetensors.torch import load_file

    linearise(model, read_settings(path))
    file = Path(path) / WEIGHTS_FILE
    saved = load_file(str(file))
    expected = linear_state_dict(model)
    if set(saved) != set(expected):
        missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        raise ValueError(f"{file}: does not match the model ({len(missing)} tensors missing, e.g. "
                         f"{missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})")
    model.load_state_dict(saved, strict=False)
