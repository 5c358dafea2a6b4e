"""The FIRST objective on tiny causal LMs: the example is inference's prompt + "[" then the ranking and EOS,
the LM term equals transformers' own loss with the prompt masked, the ranking term reads the identifier
logits where inference reads them (in every mode, either padding side), and the combined loss is
L_LM + 10 x weighted RankNet with each term returned separately."""
from __future__ import annotations

import math

import pytest
import torch

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.first import FirstOptions, FirstReranker
from rankline.rerankers.models import CausalLM, load_causal_lm
from rankline.rerankers.prompts import listwise_messages, passage_content, Passage, render_chat
from rankline.rerankers.training.data import ListwiseConversation, RankingExample, sharegpt_record
from rankline.rerankers.training.first_loss import (
    IGNORE_INDEX,
    FirstObjective,
    collate_first,
    encode_first,
    first_loss,
    first_loss_from_logits,
    first_objective,
    identifier_ids,
    lm_loss,
)
from rankline.rerankers.training.ranking_losses import listnet_loss, ranknet_loss

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
WORDS = "cat dog fish bird tree river stone cloud wind fire".split()


@pytest.fixture(scope="module")
def tiny(fixtures_dir) -> CausalLM:
    return load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def qwen(tiny) -> CausalLM:
    """A tiny random Qwen2 (another architecture: biases on q/k/v) with the tiny Llama's tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tiny.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         pad_token_id=tiny.tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config).eval()
    return CausalLM(model, tiny.tokenizer, "tiny-qwen2", torch.device("cpu"))


def example(n: int, seed: int, qid: str = "q") -> RankingExample:
    g = torch.Generator().manual_seed(seed)
    hits = tuple(Hit(f"{qid}-d{i}", float(n - i), " ".join(WORDS[j] for j in torch.randint(0, 10, (5 + 3 * i,), generator=g)))
                 for i in range(n))
    order = tuple(torch.randperm(n, generator=g).tolist())
    grades = [0] * n
    grades[order[0]] = 2
    if n > 2:
        grades[order[1]] = 1
    return RankingExample(Candidates(Query(qid, f"which {WORDS[seed % 10]} is best"), hits), order, tuple(grades))


def batch_of(lm: CausalLM, examples, padding_side="left"):
    ids = identifier_ids(lm.tokenizer)
    encoded = [encode_first(lm.tokenizer, e, identifiers=ids) for e in examples]
    return encoded, collate_first(encoded, pad_token_id=lm.tokenizer.pad_token_id, identifiers=ids, padding_side=padding_side)


EXAMPLES = [example(3, 1), example(7, 2), example(5, 3)]


def test_identifier_ids_are_the_letters_the_tokenizer_writes_after_the_bracket(tiny):
    tok = tiny.tokenizer
    ids = identifier_ids(tok)
    assert len(ids) == 26
    assert ids == [tok.convert_tokens_to_ids(chr(65 + i)) for i in range(26)]
    assert tok.encode("[C]", add_special_tokens=False)[1] == ids[2]


def test_example_is_inference_input_then_the_ranking_and_eos(tiny):
    tok = tiny.tokenizer
    ex = example(4, 5)
    enc = encode_first(tok, ex)
    reranker = FirstReranker(tiny, FirstOptions(window=4, stride=2))
    assert list(enc.input_ids[:enc.prompt_length]) == tok.encode(reranker.engine_input(ex.candidates))
    assert tok.decode(enc.input_ids[enc.prompt_length - 1:enc.prompt_length]) == "["
    assert tok.decode(enc.target_ids) == ex.ranking_string()[1:] + tok.eos_token
    assert enc.target_ids[0] == identifier_ids(tok)[ex.order[0]] and enc.target_ids[-1] == tok.eos_token_id
    assert [enc.ranks[p] for p in ex.order] == [1, 2, 3, 4]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("arch", ["tiny", "qwen"])
def test_lm_term_equals_transformers_loss_with_the_prompt_masked(request, arch, padding_side):
    lm = request.getfixturevalue(arch)
    encoded, batch = batch_of(lm, EXAMPLES, padding_side)
    for row, enc in enumerate(encoded):  # labels: -100 on prompt and padding, the target tokens after
        labels = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labels == list(enc.target_ids)
    out = first_loss(lm.model, batch)
    hf = lm.model(**batch.model_inputs(), labels=batch.labels).loss
    assert float(out.lm_loss) == pytest.approx(float(hf), rel=1e-5)
    full = lm.model(**batch.model_inputs()).logits
    assert float(lm_loss(full, batch.labels)) == pytest.approx(float(hf), rel=1e-5)


@pytest.mark.parametrize("arch", ["tiny", "qwen"])
def test_scores_are_the_logits_inference_reads(request, arch):
    """Each row's scores are the identifier logits of a forward pass over that window's prompt + "[" alone:
    what FIRST inference ranks by, at the position that predicts the first identifier."""
    lm = request.getfixturevalue(arch)
    encoded, batch = batch_of(lm, EXAMPLES, "right")
    ids = identifier_ids(lm.tokenizer)
    for objective in (first_objective("combined"), first_objective("ranking"), first_objective("combined", "listnet")):
        out = first_loss(lm.model, batch, objective)
        for row, enc in enumerate(encoded):
            alone = lm.model(input_ids=torch.tensor([enc.input_ids[:enc.prompt_length]])).logits[0, -1]
            n = len(enc.ranks)
            torch.testing.assert_close(out.scores[row, :n], alone[ids[:n]], atol=1e-5, rtol=1e-5)
            assert torch.isinf(out.scores[row, n:]).all()


def test_ranking_only_mode_reads_the_bracket_position_not_position_zero(tiny):
    _, batch = batch_of(tiny, EXAMPLES, "left")
    out = first_loss(tiny.model, batch, first_objective("ranking"))
    full = tiny.model(**batch.model_inputs()).logits
    at_zero = full[:, 0][:, batch.identifier_ids]
    assert not torch.allclose(out.scores[0, :3], at_zero[0, :3])
    assert float(out.ranking_loss) == pytest.approx(float(ranknet_loss(full[torch.arange(3), batch.rank_positions][:, batch.identifier_ids],
                                                                       batch.ranks)), rel=1e-5)


def test_padding_side_changes_nothing(tiny):
    _, left = batch_of(tiny, EXAMPLES, "left")
    _, right = batch_of(tiny, EXAMPLES, "right")
    a, b = first_loss(tiny.model, left), first_loss(tiny.model, right)
    for x, y in ((a.loss, b.loss), (a.lm_loss, b.lm_loss), (a.ranking_loss, b.ranking_loss)):
        assert float(x) == pytest.approx(float(y), rel=1e-5)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)


def test_combined_is_lm_plus_ten_weighted_ranknet_and_terms_come_back_separately(tiny):
    _, batch = batch_of(tiny, EXAMPLES)
    out = first_loss(tiny.model, batch, first_objective("combined"))
    lm_only = first_loss(tiny.model, batch, first_objective("lm"))
    rank_only = first_loss(tiny.model, batch, first_objective("ranking"))
    assert float(out.loss) == pytest.approx(float(out.lm_loss) + 10 * float(out.ranking_loss), rel=1e-6)
    assert float(out.lm_loss) == pytest.approx(float(lm_only.loss), rel=1e-6) and lm_only.ranking_loss is None
    assert float(out.ranking_loss) == pytest.approx(float(rank_only.loss), rel=1e-6) and rank_only.lm_loss is None
    assert float(out.ranking_loss) == pytest.approx(float(ranknet_loss(out.scores.masked_fill(batch.ranks == 0, 0), batch.ranks)), rel=1e-6)
    metrics = out.metrics()
    assert set(metrics) >= {"loss", "lm_loss", "ranking_loss", "top1", "tied_pairs"}
    listnet = first_loss(tiny.model, batch, first_objective("combined", "listnet"))
    assert float(listnet.loss) == pytest.approx(float(listnet.lm_loss) + 0.1 * float(listnet.ranking_loss), rel=1e-6)
    assert float(listnet.ranking_loss) == pytest.approx(
        float(listnet_loss(out.scores.masked_fill(batch.ranks == 0, 0), batch.ranks)), rel=1e-6)


def test_full_logits_entry_point_agrees(tiny):
    _, batch = batch_of(tiny, EXAMPLES)
    full = tiny.model(**batch.model_inputs()).logits
    for objective in (first_objective("combined"), first_objective("ranking", "lambdarank"), first_objective("lm")):
        a, b = first_loss(tiny.model, batch, objective), first_loss_from_logits(full, batch, objective)
        assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-5)


def test_grades_turn_equal_grades_into_ties(tiny):
    ex = RankingExample(example(4, 9).candidates, (0, 1, 2, 3), (1, 0, 0, 0))
    _, batch = batch_of(tiny, [ex])
    strict = first_loss(tiny.model, batch, FirstObjective())
    graded = first_loss(tiny.model, batch, FirstObjective(use_grades=True))
    assert int(strict.tied_pairs.sum()) == 0 and int(strict.ordered_pairs.sum()) == 6
    assert int(graded.tied_pairs.sum()) == 3 and int(graded.ordered_pairs.sum()) == 3


def test_gradients_reach_the_model_in_every_mode(tiny):
    model = tiny.model
    _, batch = batch_of(tiny, EXAMPLES[:2])
    for mode in ("combined", "ranking", "lm"):
        model.zero_grad()
        first_loss(model, batch, first_objective(mode)).loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    model.zero_grad()


def test_lm_loss_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1, 6], [IGNORE_INDEX, 2, 2, 0, IGNORE_INDEX]])
    assert torch.autograd.gradcheck(lambda x: lm_loss(x, labels), (logits,))
    # by hand: the mean over the 5 labelled next tokens of -log softmax
    lp = torch.log_softmax(logits.detach(), -1)
    manual = -(lp[0, 1, 3] + lp[0, 2, 1] + lp[0, 3, 6] + lp[1, 0, 2] + lp[1, 1, 2] + lp[1, 2, 0]) / 6
    assert float(lm_loss(logits, labels)) == pytest.approx(float(manual), rel=1e-12)
    assert math.isfinite(float(manual))


def test_sharegpt_record_is_rendered_as_inference_renders_a_window(tiny):
    tok = tiny.tokenizer
    ex = example(4, 6)
    record = sharegpt_record(ex)
    turns = record["conversations"]
    conversation = ListwiseConversation("q", turns[0]["value"], turns[1]["value"], ex.order)
    enc = encode_first(tok, conversation)
    contents = [passage_content(Passage(h.text, h.title)) for h in ex.hits]
    assert list(enc.input_ids[:enc.prompt_length]) == tok.encode(render_chat(tok, listwise_messages(ex.query.text, contents)) + "[")
    assert tok.decode(enc.target_ids) == ex.ranking_string()[1:] + tok.eos_token and enc.grades is None


def test_bad_objectives_and_batches_are_errors(tiny):
    with pytest.raises(ValueError, match="no term"):
        FirstObjective(lm_weight=0.0, ranking_loss=None)
    with pytest.raises(ValueError, match="ranking_loss"):
        FirstObjective(ranking_loss="listmle")
    with pytest.raises(ValueError, match="mode"):
        first_objective("rank")
    encoded, _ = batch_of(tiny, EXAMPLES[:1])
    with pytest.raises(ValueError, match="padding_side"):
        collate_first(encoded, pad_token_id=0, identifiers=identifier_ids(tiny.tokenizer), padding_side="middle")
    with pytest.raises(ValueError, match="at most 26"):
        encode_first(tiny.tokenizer, example(27, 1))
