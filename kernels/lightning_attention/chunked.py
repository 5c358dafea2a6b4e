"""The PyTorch path of lightning attention: the chunked forward and its three-pass backward, wrapped in a
torch.autograd.Function. The backward and the wrapper take any forward with the contract of
``chunked_linear_attention``, so the Triton path (triton.py) reuses them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from ..backend import accumulation_dtype
from .decay import _exp_masked

if TYPE_CHECKING:
    import torch

# A forward linear attention (q, k, v, log_decay, initial_state, chunk_size, scale) -> (o, final_state).
LinearAttentionForward = Callable[
    ["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor", Optional["torch.Tensor"], int, float],
    "tuple[torch.Tensor, torch.Tensor]",
]


# Tokens per pass of the chunked path: its intermediates (scores, weighted keys, entering states) stay
# cache-sized instead of streaming sequence-sized tensors through memory several times.
_SEGMENT_TOKENS = 512


def chunked_linear_attention(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    log_decay: "torch.Tensor",
    initial_state: "torch.Tensor | None",
    chunk_size: int,
    scale: float = 1.0,
) -> "tuple[torch.Tensor, torch.Tensor]":
    """o_t = scale * q_t S_t and the final state, all in the inputs' dtype; no autograd of its own.

    Inside a chunk of C tokens: (q k^T * decay mask) v. Between chunks: the state entering chunk c adds
    exp(g * (i + 1)) q_i S_c to local position i, and S_{c+1} = exp(g * L_c) S_c + sum_j exp(g * (L_c - 1 - j)) k_j v_j^T.
    The sequence is processed in segments of whole chunks, carrying the state from one to the next.
    """
    B, H, T, Dk = q.shape
    C = max(1, min(chunk_size, T))
    segment = max(C, _SEGMENT_TOKENS // C * C)
    o = v.new_empty(B, H, T, v.shape[-1])
    state = q.new_zeros(B, H, Dk, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype).clone()
    for lo in range(0, T, segment):
        hi = min(T, lo + segment)
        o[:, :, lo:hi] = _chunked_segment(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], log_decay, state, C, scale)
    return o, state


def _chunked_segment(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    log_decay: "torch.Tensor",
    state: "torch.Tensor",
    C: int,
    scale: float,
) -> "torch.Tensor":
    """One segment of ``chunked_linear_attention``: returns its output and advances ``state`` in place."""
    import torch
    import torch.nn.functional as F

    B, H, T, Dk = q.shape
    Dv = v.shape[-1]
    n = -(-T // C)
    pad = n * C - T
    if pad:  # zero keys and values add nothing; the last chunk's real length is handled below
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    qc, kc, vc = q.unflatten(2, (n, C)), k.unflatten(2, (n, C)), v.unflatten(2, (n, C))
    g = log_decay.to(q.dtype)
    pos = torch.arange(C, device=q.device, dtype=q.dtype)
    lag = pos[:, None] - pos[None, :]
    intra_decay = _exp_masked(g[:, None, None] * lag, lag >= 0) * scale  # [H, C, C]; scale rides on the weights
    o = (qc @ kc.transpose(-1, -2)).mul_(intra_decay[:, None]) @ vc  # [B, H, n, C, Dv]

    lengths = torch.full((n,), C, device=q.device, dtype=q.dtype)
    lengths[-1] = T - (n - 1) * C
    to_end = lengths[:, None] - 1 - pos  # [n, C]
    key_weight = _exp_masked(g[:, None, None] * to_end, to_end >= 0)  # [H, n, C]
    local_states = (kc * key_weight[..., None]).transpose(-1, -2) @ vc  # [B, H, n, Dk, Dv]
    chunk_decay = torch.exp(g[:, None] * lengths).T.reshape(n, H, 1, 1).unbind(0)
    entering = torch.empty_like(local_states)  # the state before each chunk
    for c in range(n):  # the only sequential part: n [Dk, Dv] updates
        entering[:, :, c] = state
        state.mul_(chunk_decay[c]).add_(local_states[:, :, c])
    query_weight = torch.exp(g[:, None, None] * (pos + 1)[:, None]) * scale  # [H, C, 1]
    o.view(-1, C, Dv).baddbmm_((qc * query_weight[:, None]).reshape(-1, C, Dk), entering.view(-1, Dk, Dv))
    return o.flatten(2, 3)[:, :, :T]


def lightning_attention_backward(
    forward: LinearAttentionForward,
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    log_decay: "torch.Tensor",
    initial_state: "torch.Tensor | None",
    grad_o: "torch.Tensor",
    grad_state: "torch.Tensor | None",
    chunk_size: int,
    scale: float,
    final_state: "torch.Tensor | None" = None,
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]":
    """dq, dk, dv, d(initial_state), d(log_decay) of o_t = scale * q_t S_t, by three runs of a forward linear
    attention LA.

    dq_t = scale * dO_t S_t^T is LA with (q, k, v) = (dO, v, k) and initial state S_0^T; dk and dv are LA
    backward in time: dk = flip(LA(flip v, flip dO, flip q)), dv = flip(LA(flip k, flip q, flip dO)) (both
    times scale), and scale times the second one's final state gives d(initial_state). The final-state
    gradient adds exp(g (T-1-j)) terms directly.

    d(log_decay) (only when ``final_state``, the forward's S_T, is given): every term of o_t and S_T carries
    exp(g * lag), lag = (t + 1) - (j + 1) for key j (the initial state counts as key -1), so
    dg = sum_t (t + 1) (q_t . dq_t - k_t . dk_t) + T <S_T, dS_T>, summed over the batch.
    """
    import torch

    T = q.shape[2]
    g = log_decay.to(q.dtype)
    s0_t = None if initial_state is None else initial_state.transpose(-1, -2)
    dq, _ = forward(grad_o, v, k, g, s0_t, chunk_size, scale)
    q_r, k_r, v_r, grad_o_r = (x.flip(2) for x in (q, k, v, grad_o))  # time reversed
    dk, _ = forward(v_r, grad_o_r, q_r, g, None, chunk_size, scale)
    dv, reverse_state = forward(k_r, q_r, grad_o_r, g, None, chunk_size, scale)
    dk, dv = dk.flip(2), dv.flip(2)
    d_initial = None if initial_state is None else (scale * torch.exp(g))[:, None, None] * reverse_state
    if grad_state is not None:
        t = torch.arange(T, device=q.device, dtype=q.dtype)
        tail = torch.exp(g[:, None, None] * (T - 1 - t)[:, None])  # [H, T, 1]
        dk = dk + tail * (v @ grad_state.transpose(-1, -2))
        dv = dv + tail * (k @ grad_state)
        if d_initial is not None:
            d_initial = d_initial + torch.exp(g * T)[:, None, None] * grad_state
    d_decay = None
    if final_state is not None:
        position = torch.arange(1, T + 1, device=q.device, dtype=q.dtype)
        d_decay = (((q * dq).sum(-1) - (k * dk).sum(-1)) * position).sum((0, 2))
        if grad_state is not None:
            d_decay = d_decay + T * (final_state * grad_state).sum((0, 2, 3))
    return dq, dk, dv, d_initial, d_decay


def _autograd_function(forward: LinearAttentionForward) -> type:
    """A torch.autograd.Function running ``forward`` (a chunked linear attention) and its three-pass backward."""
    import torch

    class LightningFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, log_decay, scale, initial_state, chunk_size):  # type: ignore[override]
            ctx.set_materialize_grads(False)
            acc = accumulation_dtype(q.dtype)
            q_, k_, v_ = q.to(acc), k.to(acc), v.to(acc)
            s0 = None if initial_state is None else initial_state.to(acc)
            o, state = forward(q_, k_, v_, log_decay, s0, chunk_size, scale)
            # the final state enters d(log_decay); kept only when the decay is learned
            ctx.save_for_backward(q_, k_, v_, log_decay, s0, state if ctx.needs_input_grad[3] else None)
            ctx.scale, ctx.chunk_size, ctx.dtypes = scale, chunk_size, (q.dtype, k.dtype, v.dtype)
            ctx.state_dtype = None if initial_state is None else initial_state.dtype
            return o.to(q.dtype), state

        @staticmethod
        def backward(ctx, grad_o, grad_state):  # type: ignore[override]
            q, k, v, log_decay, s0, final_state = ctx.saved_tensors
            grad_o = torch.zeros_like(v) if grad_o is None else grad_o.to(v.dtype)
            grad_state = None if grad_state is None else grad_state.to(v.dtype)
            dq, dk, dv, ds0, dg = lightning_attention_backward(
                forward, q, k, v, log_decay, s0, grad_o, grad_state, ctx.chunk_size, ctx.scale, final_state
            )
            q_dtype, k_dtype, v_dtype = ctx.dtypes
            ds0 = None if ds0 is None else ds0.to(ctx.state_dtype)
            dg = None if dg is None else dg.to(log_decay.dtype)
            return dq.to(q_dtype), dk.to(k_dtype), dv.to(v_dtype), dg, None, ds0, None

    return LightningFunction
