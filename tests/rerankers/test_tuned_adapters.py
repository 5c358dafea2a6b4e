"""Every adapter shipped under rerankers/tuned/ is a peft LoRA adapter of at most 10 MB, its training.json
and held-out curve agree, and its held-out queries are SciFact training queries, none of them a test query."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankline.formats import read_qrels

TUNED = Path(__file__).resolve().parents[2] / "rerankers" / "tuned"
ADAPTERS = sorted(p for p in TUNED.iterdir() if p.is_dir())


def test_there_is_a_tuned_adapter():
    assert [p.name for p in ADAPTERS] == ["blockrank-scifact"]


@pytest.mark.parametrize("folder", ADAPTERS, ids=lambda p: p.name)
def test_a_shipped_adapter_is_small_and_its_records_agree(folder):
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "smollm2-135m-instruct"
    assert (folder / "adapter_model.safetensors").stat().st_size <= 10 * 2**20
    info = json.loads((folder / "training.json").read_text())
    curve = json.loads((folder / "held-out.json").read_text())
    assert curve["best"]["step"] == info["step"] and curve["best"]["ndcg@10"] == info["held_out"]["ndcg@10"]
    assert info["settings"]["lora_rank"] == config["r"] and info["settings"]["model"] == "smollm2-135m-instruct"


@pytest.mark.parametrize("folder", ADAPTERS, ids=lambda p: p.name)
def test_model_selection_saw_no_test_query(folder, data_dir):
    held = (folder / "held-out-qids.txt").read_text().split()
    train = read_qrels(data_dir / "beir" / "scifact" / "qrels" / "train.tsv")
    test = read_qrels(data_dir / "beir" / "scifact" / "qrels" / "test.tsv")
    assert len(held) == json.loads((folder / "training.json").read_text())["settings"]["held_out"]
    assert set(held) <= set(train) and not set(held) & set(test)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ADAPTERS, ids=lambda p: p.name)
def test_a_shipped_adapter_loads_onto_the_embedded_model_and_changes_it(folder):
    import torch

    from rankline.rerankers.models import load_causal_lm

    ids = torch.tensor([[1, 504, 3458, 314, 260, 1345, 28]])
    with torch.no_grad():
        base = load_causal_lm(device="cpu", dtype="float32").model(ids).logits
        tuned = load_causal_lm(device="cpu", dtype="float32", adapter=str(folder)).model(ids).logits
    assert tuned.shape == base.shape and not torch.allclose(tuned, base, atol=1e-3)
