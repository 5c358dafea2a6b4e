"""The linearised attention (rankline.rerankers.linear.attention): the parallel form against the dense oracle
(output and every gradient, fp64), the recurrent step against the parallel form token by token, a prompt
continued from its state, padding keys, and the fp32 path."""
from __future__ import annotations

import pytest
import torch

from rankline.rerankers.linear.attention import (
    hedgehog_features,
    hybrid_attention,
    hybrid_attention_naive,
    hybrid_attention_step,
)


def _inputs(b=2, h=3, t=11, d=5, dv=4, e=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, t, d, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(b, h, t, dv, generator=gen, dtype=dtype)
    wq, wk = (torch.randn(h, d, e, generator=gen, dtype=dtype) for _ in range(2))
    alpha = torch.randn(h, generator=gen, dtype=dtype)
    decay = torch.tensor([0.0, -0.2, -1.5], dtype=dtype)[:h]
    return q, k, v, wq, wk, alpha, decay


def _run(form, q, k, v, wq, wk, alpha, decay, window, valid=None):
    fq, fk = hedgehog_features(q, wq), hedgehog_features(k, wk)
    factor = torch.sigmoid(alpha) if window else None
    if form == "naive":
        return hybrid_attention_naive(q, k, v, fq, fk, window=window, window_factor=factor, log_decay=decay,
                                      key_valid=valid)
    return hybrid_attention(q, k, v, fq, fk, window=window, window_factor=factor, log_decay=decay,
                            key_valid=valid, backend="torch")[0]


def test_hedgehog_features_hand_computed() -> None:
    x = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    e = torch.exp(torch.tensor(1.0, dtype=torch.float64))
    want = torch.tensor([e / (e + 1), 1 / (e + 1), 1 / (1 + e), e / (1 + e)], dtype=torch.float64)
    torch.testing.assert_close(hedgehog_features(x, torch.eye(2, dtype=torch.float64)[None])[0, 0, 0], want)


@pytest.mark.parametrize(("t", "window"), [(11, 0), (11, 1), (11, 4), (13, 5), (3, 8), (16, 4)])
@pytest.mark.parametrize("padded", [False, True])
def test_parallel_form_equals_dense_oracle_with_gradients(t, window, padded) -> None:
    q, k, v, wq, wk, alpha, decay = _inputs(t=t)
    valid = None
    if padded:  # left padding in row 0, a hole in row 1
        valid = torch.ones(2, t, dtype=torch.bool)
        valid[0, :2] = False
        valid[1, t // 2] = False
    leaves = [x.clone().requires_grad_() for x in (q, k, v, wq, wk, alpha, decay)]
    leaves_ref = [x.clone().requires_grad_() for x in (q, k, v, wq, wk, alpha, decay)]
    y = _run("torch", *leaves, window, valid)
    y_ref = _run("naive", *leaves_ref, window, valid)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    grads = torch.autograd.grad((y * dy).sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), leaves_ref, allow_unused=True)
    for name, a, e in zip(("q", "k", "v", "feature_q", "feature_k", "alpha", "log_decay"), grads, grads_ref):
        if window == 0 and name == "alpha":
            assert a is None and e is None
            continue
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11, msg=f"d{name}")


@pytest.mark.parametrize("window", [0, 1, 3])
def test_recurrent_step_equals_parallel_form(window) -> None:
    q, k, v, wq, wk, alpha, decay = _inputs(t=9)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[0, :3] = False
    fq, fk = hedgehog_features(q, wq), hedgehog_features(k, wk)
    args = dict(window_factor=torch.sigmoid(alpha) if window else None, log_decay=decay)
    whole, _ = hybrid_attention(q, k, v, fq, fk, window=window, key_valid=valid, backend="torch", **args)
    prompt = 4  # the first tokens in parallel, then one at a time
    y, state = hybrid_attention(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], fq[:, :, :prompt],
                                fk[:, :, :prompt], window=window, key_valid=valid[:, :prompt], backend="torch", **args)
    torch.testing.assert_close(y, whole[:, :, :prompt], rtol=1e-12, atol=1e-12)
    for t in range(prompt, 9):
        y_t, state = hybrid_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], fq[:, :, t], fk[:, :, t], state,
                                           key_valid=valid[:, t], **args)
        torch.testing.assert_close(y_t, whole[:, :, t], rtol=1e-10, atol=1e-12)
        assert state.keys.shape[2] == window and state.linear.shape == (2, 3, fk.shape[-1], v.shape[-1] + 1)


def test_parallel_form_continues_from_a_state() -> None:
    q, k, v, wq, wk, alpha, decay = _inputs(t=14)
    fq, fk = hedgehog_features(q, wq), hedgehog_features(k, wk)
    args = dict(window=4, window_factor=torch.sigmoid(alpha), log_decay=decay, backend="torch")
    whole, _ = hybrid_attention(q, k, v, fq, fk, **args)
    part = [x[:, :, :6] for x in (q, k, v, fq, fk)]
    rest = [x[:, :, 6:] for x in (q, k, v, fq, fk)]
    _, state = hybrid_attention(*part, **args)
    y, _ = hybrid_attention(*rest, state=state, **args)
    torch.testing.assert_close(y, whole[:, :, 6:], rtol=1e-12, atol=1e-12)


def test_float32_path_is_close_to_float64_oracle() -> None:
    q, k, v, wq, wk, alpha, decay = _inputs(t=70, d=8, e=8)
    y = _run("torch", *(x.float() for x in (q, k, v, wq, wk, alpha, decay)), 16)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _run("naive", q, k, v, wq, wk, alpha, decay, 16), rtol=1e-4, atol=1e-5)
