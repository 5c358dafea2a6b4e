"""Fixtures for the retrieval tests: a tiny random sentence-transformers encoder built locally (fast,
deterministic, no download) and tiny corpora."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS_A = [
    ("a1", "Apples", "apple orchards grow red apples in autumn"),
    ("a2", "Bananas", "banana plantations need a warm humid climate"),
    ("a3", "Cherries", "cherry trees blossom in spring and fruit in summer"),
    ("a4", "", "the quick brown fox jumps over the lazy dog"),
    ("a5", "Grapes", "vineyards turn grapes into wine"),
    ("a6", "Oranges", "orange groves in Spain export citrus fruit"),
]
DOCS_B = [
    ("b1", "Lemons", "lemon juice is sour and rich in vitamin C"),
    ("b2", "Pears", "pear trees are pollinated by bees"),
]


def write_beir_corpus(path: Path, docs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in docs))
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer, 32-dim random BERT with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankline.retrieval.encoder import resolve_encoder

    root = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = Transformer(str(root / "bert"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(root / "st"))
    return str(root / "st")


@pytest.fixture
def corpus_a(tmp_path) -> Path:
    return write_beir_corpus(tmp_path / "a" / "corpus.jsonl", DOCS_A)


@pytest.fixture
def corpus_b(tmp_path) -> Path:
    return write_beir_corpus(tmp_path / "b" / "corpus.jsonl", DOCS_B)
