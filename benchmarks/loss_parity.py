"""Loss parity: rankline's training losses against the reference implementations' own loss functions.

    .venv/bin/python benchmarks/loss_parity.py [--fixture tests/rerankers/training/fixtures/loss_parity.json] [--all]

The fixture holds fixed inputs and the value and gradient that each reference function returned on them
(rank_llm ``training/utils/loss.py`` rank_net / listNet / lambdarank and ``train_utils.compute_generation_loss``;
allRank ``lambdaLoss`` with ``lambdaRank_scheme``; BlockRank ``losses.compute_auxiliary_attention_loss``), built
by tests/rerankers/training/fixtures/make_loss_fixtures.py (how: the README beside it). This script computes
ours on the same inputs and prints one row per case: the reference value, ours, |Δ value| and the largest
|Δ| over the gradient. Without --all, one row per loss and list size (the largest deltas are in the summary).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "rerankers" / "training" / "fixtures" / "loss_parity.json"

# What each fixture key compares, as printed.
LOSSES = {
    "ranknet": "weighted RankNet  vs rank_llm rank_net(weighted=True)",
    "ranknet_unweighted": "RankNet          vs rank_llm rank_net()",
    "listnet": "ListNet          vs rank_llm listNet(y=(n-r)/T)",
    "lambdarank": "LambdaRank ΔNDCG  vs allRank lambdaLoss(lambdaRank_scheme, mean, ln)",
    "ndcg_loss2": "LambdaRank NDCG-Loss2 / ln2 vs rank_llm lambdarank() defaults",
    "lm": "LM loss          vs rank_llm compute_generation_loss",
    "aux": "BlockRank InfoNCE vs BlockRank compute_auxiliary_attention_loss",
}


@dataclass
class Row:
    loss: str
    case: str
    reference: float
    ours: float
    value_delta: float
    grad_delta: float


def _ranking_row(key: str, case: dict) -> Row:
    import torch

    from rankline.rerankers.training import ranking_losses as rl

    scores = torch.tensor(case["scores"], dtype=torch.float64, requires_grad=True)
    ranks = torch.tensor([case["ranks"]])
    grades = torch.tensor([case["relevance"]], dtype=torch.float64)
    if key == "ranknet":
        value = rl.ranknet_loss(scores[None], ranks, grades=grades)
    elif key == "ranknet_unweighted":
        value = rl.ranknet_loss(scores[None], ranks, grades=grades, weighted=False)
    elif key == "listnet":
        value = rl.listnet_loss(scores[None], ranks, grades=grades, temperature=case["temperature"])
    elif key == "lambdarank":
        by_grade = case["relevance_from"] == "grades"
        value = rl.lambdarank_loss(scores[None], ranks, grades=grades if by_grade else None)
    else:
        value = rl.lambdarank_loss(scores[None], ranks, grades=grades, scheme="ndcg_loss2") / math.log(2)
    value.backward()
    name = case["name"] + (f" T={case['temperature']}" if "temperature" in case else "") + (
        f" rel={case['relevance_from']}" if "relevance_from" in case else "")
    return _row(key, name, case, float(value.detach()), [(scores.grad, case["grad"])])


def _lm_row(case: dict) -> Row:
    import torch

    from rankline.rerankers.training import lm_loss

    logits = torch.tensor(case["logits"], dtype=torch.float64, requires_grad=True)
    value = lm_loss(logits, torch.tensor(case["labels"]))
    value.backward()
    B, T, V = logits.shape
    return _row("lm", f"B={B} T={T} V={V}", case, float(value.detach()), [(logits.grad, case["grad"])])


def _aux_row(case: dict) -> Row:
    import torch

    from rankline.kernels import BlockLayout, block_attention_scores
    from rankline.rerankers.training import info_nce_loss

    q = torch.tensor(case["q"], dtype=torch.float64, requires_grad=True)
    k = torch.tensor(case["k"], dtype=torch.float64, requires_grad=True)
    layout = BlockLayout.from_lists(case["instruction"], case["docs"],
                                    [n + a for n, a in zip(case["query"], case["answer"])])
    index = torch.tensor([[b - 1, b] for b in case["bracket"]])
    scores = block_attention_scores(q, k, layout, query_index=index, scale=case["scale"])
    B, N = scores.shape
    positives = torch.zeros(B, N, dtype=torch.bool)
    documents = torch.zeros(B, N, dtype=torch.bool)
    for b, (pos, docs) in enumerate(zip(case["positives"], case["docs"])):
        positives[b, pos] = True
        documents[b, :len(docs)] = True
    value = info_nce_loss(scores, positives, documents, temperature=case["temperature"])
    value.backward()
    name = f"B={B} docs={N} positives={[len(p) for p in case['positives']]} tau={case['temperature']}"
    return _row("aux", name, case, float(value.detach()), [(q.grad, case["grad_q"]), (k.grad, case["grad_k"])])


def _row(key: str, name: str, case: dict, ours: float, grads: list) -> Row:
    import torch

    grad_delta = max(float((ours_g - torch.tensor(ref_g, dtype=ours_g.dtype)).abs().max()) for ours_g, ref_g in grads)
    return Row(key, name, case["value"], ours, abs(ours - case["value"]), grad_delta)


def rows(fixture: Path = FIXTURE) -> list[Row]:
    data = json.loads(Path(fixture).read_text())
    out = []
    for key in LOSSES:
        for case in data[key]:
            if key == "lm":
                out.append(_lm_row(case))
            elif key == "aux":
                out.append(_aux_row(case))
            else:
                out.append(_ranking_row(key, case))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", type=Path, default=FIXTURE)
    ap.add_argument("--all", action="store_true", help="every case (default: the first case of each name per loss)")
    args = ap.parse_args()
    table = rows(args.fixture)
    print(f"{'loss':<19} {'case':<36} {'reference':>14} {'rankline':>14} {'|Δ value|':>10} {'max|Δ grad|':>11}")
    seen = set()
    for r in table:
        short = (r.loss, r.case.split(" T=")[0].split(" rel=")[0])
        if not args.all and short in seen:
            continue
        seen.add(short)
        print(f"{r.loss:<19} {r.case[:36]:<36} {r.reference:>14.9f} {r.ours:>14.9f} {r.value_delta:>10.1e} {r.grad_delta:>11.1e}")
    print()
    for key, what in LOSSES.items():
        mine = [r for r in table if r.loss == key]
        print(f"{what:<68} cases {len(mine):>2}  max|Δ value| {max(r.value_delta for r in mine):.1e}  "
              f"max|Δ grad| {max(r.grad_delta for r in mine):.1e}")


if __name__ == "__main__":
    main()
