"""Fidelity of a linearised model (`rankline linearize`) to its softmax base on held-out corpus text.

    python benchmarks/linearize_fidelity.py --linear DIR --corpus CORPUS.jsonl [--base NAME] [--sequences 8]
                                            [--seq-len 256] [--device cpu] [--threads N]

Held-out text: the documents attention transfer never saw (every tenth, rankline.rerankers.linear.transfer),
cut into SEQ-LEN-token sequences; the first SEQUENCES of them are read. Prints, per layer, the relative error of
the linearised attention output against the softmax one given the softmax model's input to that layer
(RMS(diff) / RMS(softmax output), both after o_proj, summed over all sequences); then next-token top-1 agreement
between the two models (each with its own attention all the way through) and the perplexity of each on the same
tokens. The base is the model the folder was made from (its transfer record) unless --base is given.

Oracle (tests/rerankers/test_linearize_fidelity.py): a linearisation whose softmax window covers the whole
sequence is softmax attention (the mixing factor cancels in the normaliser), so every number here is then 0 error,
agreement 1 and equal perplexities.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def fidelity(base: Any, linear: Any, rows: list[list[int]]) -> dict[str, Any]:
    """Per-layer relative error, top-1 agreement and both perplexities of ``linear`` (a loaded linearised
    CausalLM) against ``base`` (its softmax CausalLM) on token sequences ``rows`` (module docstring)."""
    import torch

    from rankline.rerankers.linear.transfer import LayerRecorder

    twins = [layer.self_attn for layer in linear.model.model.layers]
    if len(twins) != len(base.model.model.layers):
        raise ValueError(f"the linearised model has {len(twins)} layers, its base {len(base.model.model.layers)}")
    layer_sq, layer_ref = [0.0] * len(twins), [0.0] * len(twins)
    agree = total = 0
    nll = {"softmax": 0.0, "linear": 0.0}
    recorder = LayerRecorder(base.model)
    try:
        with torch.inference_mode():
            for seq in rows:
                row = torch.tensor([seq], device=base.device)
                base_logits = base.model(input_ids=row, use_cache=False).logits[0, :-1].float()
                for i, twin in enumerate(twins):
                    out = twin(recorder.inputs[i], recorder.position_embeddings)[0].float()
                    ref = recorder.outputs[i].float()
                    layer_sq[i] += float((out - ref).pow(2).sum())
                    layer_ref[i] += float(ref.pow(2).sum())
                lin_logits = linear.model(input_ids=row.to(linear.device), use_cache=False).logits[0, :-1].float()
                lin_logits = lin_logits.to(base_logits.device)
                target = row[0, 1:]
                agree += int((base_logits.argmax(-1) == lin_logits.argmax(-1)).sum())
                total += target.numel()
                for name, logits in (("softmax", base_logits), ("linear", lin_logits)):
                    nll[name] += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    finally:
        recorder.remove()
    return {
        "layer_error": [math.sqrt(sq / ref) if ref else float("nan") for sq, ref in zip(layer_sq, layer_ref)],
        "agreement": agree / total, "agree": agree, "tokens": total,
        "perplexity": {name: math.exp(nll[name] / total) for name in nll},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--linear", required=True, help="the linearised model folder")
    parser.add_argument("--corpus", required=True, help="the corpus transfer read (its held-out documents are used)")
    parser.add_argument("--base", help="the softmax base model (default: the one the folder was made from)")
    parser.add_argument("--sequences", type=int, default=8, help="held-out sequences (default 8)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.sequences < 1 or args.seq_len < 2:
        parser.error("--sequences must be >= 1 and --seq-len >= 2")

    import torch

    from rankline.rerankers.linear import SETTINGS_FILE, is_linearised
    from rankline.rerankers.linear.transfer import corpus_sequences
    from rankline.rerankers.models import load_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    if not is_linearised(args.linear):
        parser.error(f"{args.linear}: not a linearised model folder (no {SETTINGS_FILE})")
    record = json.loads((Path(args.linear) / SETTINGS_FILE).read_text(encoding="utf-8"))
    base_name = args.base or (record.get("transfer") or {}).get("model")
    if base_name is None:
        parser.error("--base is needed: the folder does not record its base model")
    base = load_causal_lm(base_name, device=args.device, dtype="float32")
    linear = load_causal_lm(args.linear, device=args.device, dtype="float32")
    rows = corpus_sequences(base.tokenizer, args.corpus, args.seq_len, held_out=True)[: args.sequences]
    result = fidelity(base, linear, rows)

    settings = {k: record[k] for k in ("window", "decay", "feature_map")}
    steps = (record.get("transfer") or {}).get("steps")
    print(f"{args.linear} ({settings}, transfer steps {steps}) against {base_name}: "
          f"{len(rows)} held-out sequences x {args.seq_len} tokens")
    print("layer  relative error of the attention output")
    for i, err in enumerate(result["layer_error"]):
        print(f"{i:5d}  {err:.4f}")
    errors = result["layer_error"]
    print(f"mean   {sum(errors) / len(errors):.4f}")
    print(f"next-token top-1 agreement: {result['agreement']:.4f} ({result['agree']}/{result['tokens']})")
    soft, lin = result["perplexity"]["softmax"], result["perplexity"]["linear"]
    print(f"perplexity: softmax {soft:.2f}, linearised {lin:.2f} (ratio {lin / soft:.3f})")
    if args.json:
        from rankline.formats import atomic_write

        with atomic_write(args.json) as f:
            json.dump({"linear": args.linear, "base": base_name, "settings": settings, "sequences": len(rows),
                       "seq_len": args.seq_len, **result}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
