"""lightning_attention: chunked torch path against the quadratic reference (output, final state, every gradient),
the reference against an explicit token-by-token recurrence, the decoding step, and the decay schedules."""
from __future__ import annotations

import pytest
import torch

from rankline.kernels import (
    fla_log_decay,
    lightning_attention,
    lightning_attention_step,
    transnormer_log_decay,
)
from rankline.kernels.lightning_attention.decay import alibi_slopes

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def _inputs(b, h, t, dk, dv, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, t, dk, generator=gen) / dk**0.5 for _ in range(2))
    v = torch.randn(b, h, t, dv, generator=gen)
    s0 = torch.randn(b, h, dk, dv, generator=gen)
    return [x.to(dtype) for x in (q, k, v)] + [s0]


def test_naive_matches_explicit_recurrence() -> None:
    q, k, v, s0 = (x.double() for x in _inputs(2, 3, 9, 5, 4, torch.float64))
    log_decay = torch.tensor([0.0, -0.3, -2.0], dtype=torch.float64)
    o, state = lightning_attention(q, k, v, log_decay, scale=0.7, initial_state=s0, output_final_state=True, backend="naive")
    s = s0.clone()
    for t in range(9):
        s = torch.exp(log_decay)[:, None, None] * s + k[:, :, t, :, None] * v[:, :, t, None, :]
        torch.testing.assert_close(o[:, :, t], 0.7 * torch.einsum("bhk,bhkv->bhv", q[:, :, t], s))
    torch.testing.assert_close(state, s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("t", "dk", "dv", "chunk"),
    [(63, 60, 100, 16), (500, 100, 60, 64), (500, 64, 64, 128), (1, 8, 8, 64), (1100, 32, 24, 48)],  # 1100: 3 segments
)
@pytest.mark.parametrize("with_state", [False, True])
def test_torch_path_output_state_and_gradients(dtype, t, dk, dv, chunk, with_state, assert_close) -> None:
    q, k, v, s0 = _inputs(2, 3, t, dk, dv, dtype)
    log_decay = torch.tensor([0.0, -0.05, -1.5])
    ref = [x.double().requires_grad_() for x in (q, k, v, s0)]
    ours = [x.detach().clone().requires_grad_() for x in (q, k, v, s0)]

    def run(inputs, backend):
        qq, kk, vv, ss = inputs
        return lightning_attention(
            qq, kk, vv, log_decay, scale=0.5, initial_state=ss if with_state else None,
            output_final_state=True, chunk_size=chunk, backend=backend,
        )

    o_ref, s_ref = run(ref, "naive")
    o, s = run(ours, "torch")
    assert o.dtype == dtype and s.dtype == torch.float32
    gen = torch.Generator().manual_seed(1)
    do, ds = torch.randn(o_ref.shape, generator=gen), torch.randn(s_ref.shape, generator=gen)
    wanted = ref if with_state else ref[:3]
    grads_ref = torch.autograd.grad((o_ref * do.double()).sum() + (s_ref * ds.double()).sum(), wanted)
    grads = torch.autograd.grad((o.float() * do).sum() + (s * ds).sum(), ours if with_state else ours[:3])
    tol = TOLERANCE[dtype]
    assert_close("o", o, o_ref, tol)
    assert_close("final state", s, s_ref, tol)
    for name, a, e in zip(("dq", "dk", "dv", "dh0"), grads, grads_ref):
        assert_close(name, a, e, tol)


@pytest.mark.parametrize(("t", "chunk"), [(37, 16), (130, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_learned_decay_gradient(t, chunk, with_state, assert_close) -> None:
    """A log_decay that requires grad gets d(log_decay) on every path (naive by autograd, torch by its backward)."""
    q, k, v, s0 = _inputs(2, 3, t, 8, 6, torch.float32)
    grads = {}
    for backend in ("naive", "torch"):
        dtype = torch.float64 if backend == "naive" else torch.float32
        g = torch.tensor([-0.01, -0.3, -1.2], dtype=dtype, requires_grad=True)
        o, s = lightning_attention(
            q.to(dtype), k.to(dtype), v.to(dtype), g, scale=0.5, initial_state=s0.to(dtype) if with_state else None,
            output_final_state=True, chunk_size=chunk, backend=backend,
        )
        gen = torch.Generator().manual_seed(2)
        do, ds = (torch.randn(x.shape, generator=gen).to(dtype) for x in (o, s))
        for name, loss in (("o", (o * do).sum()), ("o and state", (o * do).sum() + (s * ds).sum())):
            grads[backend, name] = torch.autograd.grad(loss, g, retain_graph=True)[0]
    for name in ("o", "o and state"):  # 1e-4: dg is a difference of position-weighted fp32 sums
        assert_close(f"d log_decay ({name})", grads["torch", name], grads["naive", name], 1e-4)


def test_float64_is_exact_to_rounding(assert_close) -> None:
    q, k, v, s0 = (x.double() for x in _inputs(1, 2, 130, 16, 8, torch.float64))
    args = dict(scale=1.0, initial_state=s0.double(), output_final_state=True)
    o_ref, s_ref = lightning_attention(q, k, v, [-0.01, -0.7], backend="naive", **args)
    o, s = lightning_attention(q, k, v, [-0.01, -0.7], backend="torch", chunk_size=32, **args)
    assert o.dtype == torch.float64
    assert_close("o", o, o_ref, 1e-12)
    assert_close("state", s, s_ref, 1e-12)


def test_only_output_gradient_when_state_unused(assert_close) -> None:
    q, k, v, _ = _inputs(1, 2, 40, 8, 8, torch.float32)
    ref = [x.double().requires_grad_() for x in (q, k, v)]
    ours = [x.clone().requires_grad_() for x in (q, k, v)]
    o_ref, _ = lightning_attention(*ref, [-0.1, -0.2], backend="naive")
    o, state = lightning_attention(*ours, [-0.1, -0.2], backend="torch", chunk_size=16)
    assert state is None
    for a, e in zip(torch.autograd.grad(o.sum(), ours), torch.autograd.grad(o_ref.sum(), ref)):
        assert_close("grad", a, e, 1e-5)


def test_step_by_step_decoding_matches_parallel_form(assert_close) -> None:
    q, k, v, s0 = _inputs(2, 4, 33, 16, 12, torch.float32)
    log_decay = transnormer_log_decay(4, layer_idx=1, num_layers=4)
    o_ref, s_ref = lightning_attention(
        q, k, v, log_decay, scale=0.25, initial_state=s0, output_final_state=True, backend="naive"
    )
    state, outs = s0.clone(), []
    for t in range(33):
        o_t, state = lightning_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state, log_decay, scale=0.25)
        outs.append(o_t)
    assert_close("o", torch.stack(outs, dim=2), o_ref, 1e-5)
    assert_close("state", state, s_ref, 1e-5)


def test_prefill_then_continue_from_final_state(assert_close) -> None:
    q, k, v, _ = _inputs(1, 2, 90, 8, 8, torch.float32)
    g = [-0.02, -0.4]
    full, _ = lightning_attention(q, k, v, g, backend="torch", chunk_size=16)
    _, mid = lightning_attention(q[:, :, :50], k[:, :, :50], v[:, :, :50], g, output_final_state=True, chunk_size=16)
    rest, _ = lightning_attention(q[:, :, 50:], k[:, :, 50:], v[:, :, 50:], g, initial_state=mid, chunk_size=16)
    assert_close("o", rest, full[:, :, 50:], 1e-5)


def test_empty_sequence_passes_the_state_through() -> None:
    q, k, v, s0 = _inputs(1, 2, 0, 4, 6, torch.float32)
    o, state = lightning_attention(q, k, v, [-0.1, -0.2], initial_state=s0, output_final_state=True, backend="torch")
    assert o.shape == (1, 2, 0, 6)
    torch.testing.assert_close(state, s0)


def test_decay_schedules_hand_computed() -> None:
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    twelve = alibi_slopes(12)
    assert twelve[:8] == [2.0**-i for i in range(1, 9)]
    assert twelve[8:] == pytest.approx([2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5])
    slopes = torch.tensor([0.25, 0.0625, 0.015625, 0.00390625])  # alibi_slopes(4) = 2**-2, 2**-4, ...
    torch.testing.assert_close(transnormer_log_decay(4, 0, 3), -slopes * (1 + 1e-5))
    torch.testing.assert_close(transnormer_log_decay(4, 2, 3), -slopes * 1e-5)
    torch.testing.assert_close(fla_log_decay(4, 1, 4), torch.tensor([0.0, -1.5, -3.0, -4.5]))


def test_input_errors() -> None:
    q, k, v, s0 = _inputs(1, 2, 10, 4, 4, torch.float32)
    with pytest.raises(ValueError, match="<= 0"):
        lightning_attention(q, k, v, [0.1, -0.1])
    with pytest.raises(ValueError, match="one value per head"):
        lightning_attention(q, k, v, [-0.1])
    with pytest.raises(ValueError, match="initial_state"):
        lightning_attention(q, k, v, [-0.1, -0.1], initial_state=s0[:, :1])
    with pytest.raises(ValueError, match="Dk"):
        lightning_attention(q, k[..., :3], v, [-0.1, -0.1])
    with pytest.raises(ValueError, match="layer_idx"):
        fla_log_decay(4, 4, 4)


def test_float16_inputs_keep_their_dtype(assert_close) -> None:
    q, k, v, _ = _inputs(1, 2, 70, 16, 16, torch.float16)
    o, state = lightning_attention(q, k, v, [-0.1, -0.3], output_final_state=True, chunk_size=32, backend="torch")
    o_ref, s_ref = lightning_attention(q.double(), k.double(), v.double(), [-0.1, -0.3], output_final_state=True,
                                       backend="naive")
    assert o.dtype == torch.float16 and state.dtype == torch.float32
    assert_close("o", o, o_ref, 2e-3)
    assert_close("state", state, s_ref, 1e-5)
