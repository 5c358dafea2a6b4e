"""The attention of a linearised layer: softmax over a short sliding window plus feature-mapped linear attention
over everything older, with one shared normaliser (LoLCATs' hybrid, with lightning attention's per-head decay).

For head h, query t and key j (q, k after RoPE; k and v repeated to the query heads), window W >= 0:

    window keys    t - W < j <= t:   a_tj = sigmoid(alpha_h) * exp(s_tj - m_t),   s_tj = q_t . k_j / sqrt(D),
                                     m_t = max of s_tj over the window's valid keys
    linear keys    j <= t - W:       a_tj = exp(g_h * (t - W - j)) * phi_q(q_t) . phi_k(k_j)
    y_t = sum_j a_tj v_j / (sum_j a_tj + eps)

so the linear part's decay counts the steps since key j left the window (g_h = log_decay <= 0; 0 = no decay).
The normaliser is the same linear attention applied to a column of ones: values are extended to [v, 1], so one
call of ``rankline.kernels.lightning_attention`` gives numerator and denominator together, with the same decay.
W = 0 is pure linear attention (every key j <= t is linear). Invalid (padding) keys take part in neither sum.

The linear keys of query t are the keys of a stream shifted by W tokens: stream position t holds key t - W.
The state that generation carries is therefore fixed-size: the lightning state of that stream (``[B, H, F, Dv+1]``)
and the last W tokens (keys, values, feature-mapped keys, validity), a window-sized cache; each new token pushes
the oldest window token into the linear state (``hybrid_attention_step``).

``hybrid_attention`` is the parallel form (the window part in blocks of W queries against 2W keys, O(T W)); the
linear part runs on ``lightning_attention`` (its PyTorch path on the CPU, Triton on a GPU).
``hybrid_attention_naive`` is the oracle: the dense [T, T] weights of the formula above. Everything is computed
in fp32 (fp64 for fp64 inputs) and returned in the query's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rankline.kernels import lightning_attention, lightning_attention_step

if TYPE_CHECKING:
    import torch

EPS = 1e-6


@dataclass
class HybridState:
    """What generation carries per layer: ``linear`` [B, H, F, Dv+1] and the last W tokens' ``keys`` [B, H, W, D],
    ``values`` [B, H, W, Dv], ``features`` (phi_k of the keys) [B, H, W, F] and ``valid`` [B, W] (False: padding, or
    no token yet)."""

    linear: "torch.Tensor"
    keys: "torch.Tensor"
    values: "torch.Tensor"
    features: "torch.Tensor"
    valid: "torch.Tensor"

    @classmethod
    def empty(cls, q: "torch.Tensor", v: "torch.Tensor", fk: "torch.Tensor", window: int) -> "HybridState":
        import torch

        B, H, _, D = q.shape
        acc = _acc(q)
        return cls(
            linear=q.new_zeros(B, H, fk.shape[-1], v.shape[-1] + 1, dtype=acc),
            keys=q.new_zeros(B, H, window, D, dtype=acc),
            values=q.new_zeros(B, H, window, v.shape[-1], dtype=acc),
            features=q.new_zeros(B, H, window, fk.shape[-1], dtype=acc),
            valid=torch.zeros(B, window, dtype=torch.bool, device=q.device),
        )


def hedgehog_features(x: "torch.Tensor", weight: "torch.Tensor") -> "torch.Tensor":
    """Hedgehog's feature map per head: [softmax(x W_h), softmax(-x W_h)]; x [B, H, T, D], weight [H, D, E] -> [B, H, T, 2E]."""
    import torch

    z = torch.einsum("bhtd,hde->bhte", x, weight)
    return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)


def _acc(x: "torch.Tensor") -> "torch.dtype":
    import torch

    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _with_ones(v: "torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def hybrid_attention(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    fq: "torch.Tensor",
    fk: "torch.Tensor",
    *,
    window: int,
    window_factor: "torch.Tensor | None",
    log_decay: "torch.Tensor",
    key_valid: "torch.Tensor | None" = None,
    state: HybridState | None = None,
    backend: str = "auto",
) -> "tuple[torch.Tensor, HybridState]":
    """The parallel form (module docstring). q, k [B, H, T, D], v [B, H, T, Dv], fq, fk [B, H, T, F];
    window_factor [H] in (0, 1) (None when window is 0); log_decay [H]; key_valid [B, T] bool (None: all valid);
    ``state`` continues from earlier tokens (None: the sequence starts here). Returns y [B, H, T, Dv] and the state
    after the last token."""
    import torch

    dtype, acc = q.dtype, _acc(q)
    B, H, T, _ = q.shape
    q, k, v, fq, fk = (x.to(acc) for x in (q, k, v, fq, fk))
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_valid is None else key_valid.bool()
    if state is None:
        state = HybridState.empty(q, v, fk, window)
    # the previous W tokens come first: position W + t of the extended sequence is token t
    ext_k, ext_v, ext_f = (torch.cat([old, new], dim=2) for old, new in
                           ((state.keys, k), (state.values, v), (state.features, fk)))
    ext_valid = torch.cat([state.valid, valid], dim=1)
    keep = ext_valid[:, None, :T, None].to(acc)  # the linear stream: position t holds token t - W
    lin, linear = lightning_attention(fq, ext_f[:, :, :T] * keep, _with_ones(ext_v[:, :, :T]) * keep, log_decay,
                                      initial_state=state.linear, output_final_state=True, backend=backend)
    num, den = lin[..., :-1], lin[..., -1:]
    if window:
        w_num, w_den = _window_part(q, ext_k, ext_v, ext_valid, window, window_factor)
        num, den = num + w_num, den + w_den
    y = (num / (den + EPS)).to(dtype)
    new_state = HybridState(linear, ext_k[:, :, T:], ext_v[:, :, T:], ext_f[:, :, T:], ext_valid[:, T:])
    return y, new_state


def _window_part(q, ext_k, ext_v, ext_valid, W, window_factor):
    """Numerator [B, H, T, Dv] and denominator [B, H, T, 1] of the window terms, query block c (W queries, extended
    positions W(c+1)..) against extended key blocks c and c+1: key i' of the pair is in query i's window when
    0 <= W + i - i' < W."""
    import torch
    import torch.nn.functional as F

    B, H, T, D = q.shape
    n = -(-T // W)
    pad = n * W - T
    qb = F.pad(q, (0, 0, 0, pad)).unflatten(2, (n, W))  # [B, H, n, W, D]
    kb = F.pad(ext_k, (0, 0, 0, pad)).unflatten(2, (n + 1, W))
    vb = F.pad(ext_v, (0, 0, 0, pad)).unflatten(2, (n + 1, W))
    ok = F.pad(ext_valid, (0, pad)).unflatten(1, (n + 1, W))  # [B, n+1, W]
    keys = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], dim=3)  # [B, H, n, 2W, D]
    values = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], dim=3)
    key_ok = torch.cat([ok[:, :-1], ok[:, 1:]], dim=2)  # [B, n, 2W]
    i = torch.arange(W, device=q.device)
    lag = W + i[:, None] - torch.arange(2 * W, device=q.device)[None, :]
    mask = ((lag >= 0) & (lag < W))[None, None] & key_ok[:, :, None, :]  # [B, n, W, 2W]
    scores = (qb @ keys.transpose(-1, -2)) * D**-0.5
    scores = scores.masked_fill(~mask[:, None], torch.finfo(scores.dtype).min)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True)) * mask[:, None]
    weights = weights * window_factor.to(q.dtype)[:, None, None, None]
    num = (weights @ values).flatten(2, 3)[:, :, :T]
    den = weights.sum(-1, keepdim=True).flatten(2, 3)[:, :, :T]
    return num, den


def hybrid_attention_step(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    fq: "torch.Tensor",
    fk: "torch.Tensor",
    state: HybridState,
    *,
    window_factor: "torch.Tensor | None",
    log_decay: "torch.Tensor",
    key_valid: "torch.Tensor | None" = None,
) -> "tuple[torch.Tensor, HybridState]":
    """One token (q, k [B, H, D], v [B, H, Dv], fq, fk [B, H, F], key_valid [B]): the oldest window token (the
    token itself when W = 0) enters the linear state by ``lightning_attention_step``, the token joins the window."""
    import torch

    dtype, acc = q.dtype, _acc(q)
    q, k, v, fq, fk = (x.to(acc) for x in (q, k, v, fq, fk))
    valid = torch.ones(q.shape[0], dtype=torch.bool, device=q.device) if key_valid is None else key_valid.bool()
    keys, values = torch.cat([state.keys, k[:, :, None]], 2), torch.cat([state.values, v[:, :, None]], 2)
    features, ok = torch.cat([state.features, fk[:, :, None]], 2), torch.cat([state.valid, valid[:, None]], 1)
    keep = ok[:, None, 0, None].to(acc)  # the token leaving the window: [B, 1, 1]
    lin, linear = lightning_attention_step(fq, features[:, :, 0] * keep, _with_ones(values[:, :, 0]) * keep,
                                           state.linear, log_decay)
    num, den = lin[..., :-1], lin[..., -1:]
    W = state.keys.shape[2]
    if W:
        win_k, win_v, win_ok = keys[:, :, 1:], values[:, :, 1:], ok[:, None, 1:]
        scores = torch.einsum("bhd,bhwd->bhw", q, win_k) * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~win_ok, torch.finfo(scores.dtype).min)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True)) * win_ok * window_factor.to(acc)[:, None]
        num = num + torch.einsum("bhw,bhwd->bhd", weights, win_v)
        den = den + weights.sum(-1, keepdim=True)
    y = (num / (den + EPS)).to(dtype)
    return y, HybridState(linear, keys[:, :, 1:], values[:, :, 1:], features[:, :, 1:], ok[:, 1:])


def hybrid_attention_naive(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    fq: "torch.Tensor",
    fk: "torch.Tensor",
    *,
    window: int,
    window_factor: "torch.Tensor | None",
    log_decay: "torch.Tensor",
    key_valid: "torch.Tensor | None" = None,
) -> "torch.Tensor":
    """The oracle: the dense [T, T] weights of the module docstring's formula, from the start of the sequence."""
    import torch

    dtype, acc = q.dtype, _acc(q)
    q, k, v, fq, fk = (x.to(acc) for x in (q, k, v, fq, fk))
    B, H, T, D = q.shape
    t = torch.arange(T, device=q.device)
    lag = t[:, None] - t[None, :]
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_valid is None else key_valid.bool()
    in_window = ((lag >= 0) & (lag < window))[None, None] & valid[:, None, None, :]
    in_linear = (lag >= window)[None, None] & valid[:, None, None, :]
    g = log_decay.to(acc)[:, None, None]
    decay = torch.exp(g * torch.where(lag >= window, lag - window, 0).to(acc))  # [H, T, T]
    weights = torch.where(in_linear, (fq @ fk.transpose(-1, -2)) * decay, 0.0)
    if window:
        scores = (q @ k.transpose(-1, -2)) * D**-0.5
        scores = scores.masked_fill(~in_window, torch.finfo(acc).min)
        soft = torch.exp(scores - scores.amax(-1, keepdim=True)) * in_window
        weights = weights + soft * window_factor.to(acc)[:, None, None]
    return ((weights @ v) / (weights.sum(-1, keepdim=True) + EPS)).to(dtype)
