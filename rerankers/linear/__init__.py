"""Linear-attention backbones: a causal LM linearised LoLCATs-style (Hedgehog feature maps, a softmax sliding
window, lightning attention's per-head decay) so its attention runs on ``rankline.kernels.lightning_attention``.

attention.py holds the maths (parallel form, recurrent step, dense oracle), llama.py the Llama layer, the
conversion and the folder format, transfer.py stage 1 (attention transfer). This module stays light (no torch):
``load_causal_lm`` asks it whether a folder is linearised.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SETTINGS_FILE = "linear_attention.json"


def is_linearised(path: str | Path) -> bool:
    """Whether ``path`` is a linearised model folder (it has the settings file ``rankline linearize`` writes)."""
    return (Path(path) / SETTINGS_FILE).is_file()


def read_transfer(path: str | Path) -> dict[str, Any]:
    """The transfer settings a linearised folder records (``rankline linearize``'s; empty when none are recorded)."""
    return json.loads((Path(path) / SETTINGS_FILE).read_text(encoding="utf-8")).get("transfer") or {}
