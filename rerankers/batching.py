"""Batching token sequences of different lengths for one forward pass of a causal LM."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class LeftPadded:
    """A left-padded batch: the last position of every row is its last real token."""

    input_ids: Any  # LongTensor [B, L]
    attention_mask: Any  # LongTensor [B, L], 0 on padding
    position_ids: Any  # LongTensor [B, L], 0 at each row's first real token

    def model_inputs(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device: Any) -> LeftPadded:
    """Pad `sequences` on the left to one length; positions count real tokens only, so every row
    is computed as it would be alone."""
    import torch

    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, length - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, length - len(seq):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return LeftPadded(ids.to(device), mask.to(device), positions.to(device))


def length_sorted_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
