"""The BlockRank objective: InfoNCE with several positives by hand, examples that are the inference prompt
plus the official answer, scores equal to the reranker's, and loss and every parameter gradient equal to a
dense reference (plain SDPA with an explicit [T, T] mask built here, the aux loss written out) at tiny shapes."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.blockrank import BlockRankOptions, BlockRankReranker, build_prompt, format_document
from rankline.rerankers.models import CausalLM, load_causal_lm
from rankline.rerankers.training.blockrank_loss import (
    IGNORE_INDEX,
    BlockRankObjective,
    blockrank_loss,
    collate_blockrank,
    encode_blockrank,
    info_nce_loss,
)
from rankline.rerankers.training.data import RankingExample

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
WORDS = "cat dog fish bird tree river stone cloud wind fire".split()
OPTIONS = BlockRankOptions(layer=1, max_block_tokens=160)


@pytest.fixture(scope="module")
def tiny(fixtures_dir) -> CausalLM:
    return load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", dtype="float32")


def example(n: int, positives: tuple[int, ...], seed: int) -> RankingExample:
    g = torch.Generator().manual_seed(seed)
    hits = tuple(Hit(f"d{seed}-{i}", 0.0, " ".join(WORDS[j] for j in torch.randint(0, 10, (3 + 4 * i % 11,), generator=g)),
                     "t" if i % 2 else "") for i in range(n))
    grades = tuple(int(i in positives) for i in range(n))
    order = tuple(sorted(range(n), key=lambda i: -grades[i]))
    return RankingExample(Candidates(Query(f"q{seed}", f"find {WORDS[seed % 10]} {WORDS[(seed + 3) % 10]}"), hits), order, grades)


EXAMPLES = [example(3, (1,), 1), example(5, (0, 3), 2), example(4, (2,), 3)]


# ------------------------------------------------------------------------------------- InfoNCE


def test_info_nce_two_positives_by_hand():
    scores = torch.tensor([[0.2, 0.5, 0.1, 0.4], [0.3, 0.6, 0.0, 0.0]], dtype=torch.float64)
    positives = torch.tensor([[False, True, False, True], [True, False, False, False]])
    documents = torch.tensor([[True, True, True, True], [True, True, False, False]])
    # tau = 0.05: logits 4, 10, 2, 8 and 6, 12
    row0 = -(math.log(math.exp(10) + math.exp(8)) - math.log(math.exp(4) + math.exp(10) + math.exp(2) + math.exp(8)))
    row1 = -(6 - math.log(math.exp(6) + math.exp(12)))
    got = info_nce_loss(scores, positives, documents, temperature=0.05)
    assert float(got) == pytest.approx((row0 + row1) / 2, rel=1e-12)
    # padded slots never enter the denominator, whatever their score
    padded = scores.clone()
    padded[1, 2:] = 5.0
    assert float(info_nce_loss(padded, positives, documents, temperature=0.05)) == pytest.approx(float(got), rel=1e-12)


def test_info_nce_gradcheck_and_errors():
    scores = torch.tensor([[0.2, 0.5, 0.1], [0.3, 0.1, 0.6]], dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([[False, True, True], [True, False, False]])
    assert torch.autograd.gradcheck(lambda s: info_nce_loss(s, positives, temperature=0.05), (scores,))
    with pytest.raises(ValueError, match="no positive"):
        info_nce_loss(scores, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(scores, positives, temperature=0.0)


# ------------------------------------------------------------------------------------- examples


def test_example_is_the_inference_prompt_then_the_official_answer(tiny):
    tok = tiny.tokenizer
    ex = EXAMPLES[1]
    enc = encode_blockrank(tok, ex, OPTIONS)
    assert enc.prompt == build_prompt(tok, ex.query.text, [format_document(h.title, h.text) for h in ex.hits], OPTIONS)
    # the official completion "[0, 3]" plus the chat template's end of turn (Zephyr style: "</s>\n")
    assert tok.decode(list(enc.prompt.blocks[-1][-1:]) + list(enc.answer)) == "[0, 3]" + tok.eos_token + "\n"
    assert enc.positives == (0, 3)
    positions = enc.position_ids()
    q_start = sum(enc.prompt.lengths[:-1])
    assert positions[q_start] == OPTIONS.query_offset and positions[-1] == OPTIONS.query_offset + enc.lengths()[2] - 1
    batch = collate_blockrank([enc])
    labelled = batch.labels[0][batch.labels[0] != IGNORE_INDEX].tolist()
    assert labelled == [enc.prompt.blocks[-1][-1], *enc.answer]  # the "[" and the answer, as the official collate
    assert tok.decode(batch.input_ids[0, batch.scoring_index[0]]).endswith("[")


def test_an_example_without_positives_is_an_error(tiny):
    with pytest.raises(ValueError, match="at least one positive"):
        encode_blockrank(tiny.tokenizer, example(3, (), 4), OPTIONS)


def test_scores_equal_the_rerankers(tiny):
    batch = collate_blockrank([encode_blockrank(tiny.tokenizer, e, OPTIONS) for e in EXAMPLES])
    out = blockrank_loss(tiny.model, batch, BlockRankObjective.from_options(OPTIONS))
    expected = BlockRankReranker(tiny, OPTIONS).score_batch([e.candidates for e in EXAMPLES])
    for row, want in enumerate(expected):
        assert out.scores[row, :len(want)].tolist() == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert torch.isinf(out.scores[row, len(want):]).all()
    assert float(out.loss) == pytest.approx(float(out.lm_loss) + 0.1 * float(out.aux_loss), rel=1e-6)
    assert tiny.model.config._attn_implementation != "rankline_blockrank"  # restored


def test_batched_aux_loss_is_the_mean_over_examples(tiny):
    encoded = [encode_blockrank(tiny.tokenizer, e, OPTIONS) for e in EXAMPLES]
    objective = BlockRankObjective(layer=1, lm_weight=0.0)
    together = blockrank_loss(tiny.model, collate_blockrank(encoded), objective)
    alone = [blockrank_loss(tiny.model, collate_blockrank([e]), objective) for e in encoded]
    assert float(together.aux_loss) == pytest.approx(sum(float(a.aux_loss) for a in alone) / 3, rel=1e-5)
    assert together.lm_loss is None and float(together.loss) == pytest.approx(0.1 * float(together.aux_loss))


def test_without_the_lm_term_later_layers_never_run(tiny):
    calls = [0, 0]
    hooks = [layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, layer in enumerate(tiny.model.model.layers)]
    try:
        batch = collate_blockrank([encode_blockrank(tiny.tokenizer, EXAMPLES[0], OPTIONS)])
        out = blockrank_loss(tiny.model, batch, BlockRankObjective(layer=0, lm_weight=0.0))
        assert calls == [0, 0]  # layer 0 stopped inside its attention, layer 1 never started
        out.loss.backward()
        assert tiny.model.model.layers[1].self_attn.q_proj.weight.grad is None
        assert tiny.model.model.layers[0].self_attn.q_proj.weight.grad is not None
        blockrank_loss(tiny.model, batch, BlockRankObjective(layer=0))
        assert calls == [1, 1]
    finally:
        for h in hooks:
            h.remove()
        tiny.model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- the dense reference


def dense_reference(model, batch, objective: BlockRankObjective, layer: int) -> torch.Tensor:
    """The same loss through transformers with an attention function that applies an explicit [T, T] BlockRank
    mask (built here from the segment lengths) with plain SDPA, and at `layer` computes the official aux scores
    from the full logits; the LM term and InfoNCE written out."""
    from transformers import AttentionInterface

    B, T = batch.input_ids.shape
    allowed = torch.zeros(B, T, T, dtype=torch.bool)
    doc_of = torch.full((B, T), -1)
    for b, (n_instr, docs, n_query) in enumerate(zip(batch.layout.instruction, batch.layout.docs, batch.layout.query)):
        for i in range(n_instr):
            allowed[b, i, :i + 1] = True
        start = n_instr
        for d, n in enumerate(docs):
            for t in range(n):
                allowed[b, start + t, :n_instr] = True
                allowed[b, start + t, start:start + t + 1] = True
            doc_of[b, start:start + n] = d
            start += n
        for t in range(n_query):
            allowed[b, start + t, :start + t + 1] = True
        for i in range(start + n_query, T):
            allowed[b, i, i] = True  # padding sees itself only (its output is never read)
    captured = {}

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        rep = query.shape[1] // key.shape[1]
        k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
        out = F.scaled_dot_product_attention(query, k, v, attn_mask=allowed[:, None], scale=scaling)
        if module.layer_idx == layer:
            rows = []
            for b in range(B):
                logits = scaling * query[b][:, batch.scoring_index[b]] @ k[b].transpose(-1, -2)  # [H, n, T]
                probs = torch.softmax(logits.masked_fill(doc_of[b] < 0, float("-inf")), dim=-1).mean(dim=(0, 1))
                rows.append([probs[doc_of[b] == d].sum() for d in range(len(batch.layout.docs[b]))])
            captured["scores"] = rows
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("test_dense_blockrank", attention)
    previous = model.config._attn_implementation
    model.set_attn_implementation("test_dense_blockrank")
    try:
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    finally:
        model.set_attn_implementation(previous)
    terms, count = 0.0, 0
    for b in range(B):
        for t in range(T - 1):
            if batch.labels[b, t + 1] != IGNORE_INDEX:
                terms = terms - torch.log_softmax(logits[b, t], -1)[batch.labels[b, t + 1]]
                count += 1
    lm = terms / count
    aux = 0.0
    for b, row in enumerate(captured["scores"]):
        s = torch.stack(row) / objective.temperature
        pos = s[batch.positives[b, :len(row)]]
        aux = aux - (torch.logsumexp(pos, 0) - torch.logsumexp(s, 0))
    aux = aux / B
    return objective.lm_weight * lm + objective.aux_weight * aux


@pytest.mark.parametrize("lm_weight", [1.0, 0.0])
def test_loss_and_gradients_equal_the_dense_masked_reference(tiny, lm_weight):
    model = copy.deepcopy(tiny.model).double()
    batch = collate_blockrank([encode_blockrank(tiny.tokenizer, e, OPTIONS) for e in EXAMPLES[:2]])
    objective = BlockRankObjective(layer=1, lm_weight=lm_weight, aux_weight=0.1 if lm_weight else 1.0)

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}

    ours = blockrank_loss(model, batch, objective)
    ours_grads = grads(ours.loss)
    reference = dense_reference(model, batch, objective, layer=1)
    reference_grads = grads(reference)
    # rankline.kernels computes the attention scores in fp32 (the model runs in fp64 here): ~1e-6 at tau = 0.05
    assert float(ours.loss) == pytest.approx(float(reference), rel=5e-6)
    scale = max(float(g.abs().max()) for g in reference_grads.values())
    assert scale > 0
    for name, g in reference_grads.items():
        torch.testing.assert_close(ours_grads[name], g, atol=1e-6 * scale, rtol=1e-5, msg=name)
