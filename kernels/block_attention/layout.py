"""Segment layout of BlockRank prompts: per row, an instruction block, N document blocks and a query block.

Tokens of one row are packed as ``[instruction | doc_1 | ... | doc_N | query | right padding]``. Rows may
have different instruction, document and query lengths and different numbers of documents; a document
(or a whole row) of length 0 is allowed and simply holds no token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LayoutIndex:
    """Per-token and per-segment index tensors of a layout for a padded length T, on one device."""

    instruction_len: "torch.Tensor"  # [B] long
    row_len: "torch.Tensor"  # [B] long: tokens before the right padding
    segment_start: "torch.Tensor"  # [B, T] long: first key of the token's own segment it may attend to (0 outside documents)
    doc_of_token: "torch.Tensor"  # [B, T] long: document index, -1 for instruction, query and padding


@dataclass(frozen=True)
class BlockLayout:
    """Segment lengths per row. Build it with :meth:`from_lists`."""

    instruction: tuple[int, ...]
    docs: tuple[tuple[int, ...], ...]
    query: tuple[int, ...]

    @classmethod
    def from_lists(
        cls, instruction: Sequence[int], docs: Sequence[Sequence[int]], query: Sequence[int]
    ) -> BlockLayout:
        """``instruction[b]``, ``docs[b][i]`` and ``query[b]`` are token counts of row b."""
        if not (len(instruction) == len(docs) == len(query)):
            raise ValueError(
                f"BlockLayout: instruction, docs and query need one entry per row, got "
                f"{len(instruction)}, {len(docs)} and {len(query)}"
            )
        layout = cls(
            instruction=tuple(int(n) for n in instruction),
            docs=tuple(tuple(int(n) for n in row) for row in docs),
            query=tuple(int(n) for n in query),
        )
        lengths = [*layout.instruction, *layout.query, *(n for row in layout.docs for n in row)]
        if any(n < 0 for n in lengths):
            raise ValueError(f"BlockLayout: segment lengths must be >= 0, got {min(lengths)}")
        return layout

    @property
    def batch_size(self) -> int:
        return len(self.instruction)

    @property
    def num_docs(self) -> int:
        """N: the largest number of documents in a row (shorter rows are padded with empty documents)."""
        return max((len(row) for row in self.docs), default=0)

    @property
    def row_lengths(self) -> tuple[int, ...]:
        return tuple(i + sum(d) + q for i, d, q in zip(self.instruction, self.docs, self.query))

    @property
    def seq_len(self) -> int:
        """The smallest padded length T that holds every row."""
        return max(self.row_lengths, default=0)

    def query_starts(self) -> tuple[int, ...]:
        return tuple(i + sum(d) for i, d in zip(self.instruction, self.docs))

    def check_length(self, seq_len: int) -> None:
        if len(self.instruction) and seq_len < self.seq_len:
            raise ValueError(f"BlockLayout: rows need {self.seq_len} tokens but the tensors hold only {seq_len}")

    def index(self, seq_len: int, device: "torch.device | str | None" = None) -> LayoutIndex:
        """Index tensors for tensors padded to ``seq_len`` tokens."""
        import torch

        self.check_length(seq_len)
        B, T = self.batch_size, seq_len
        segment_start = torch.zeros(B, T, dtype=torch.long)
        doc_of_token = torch.full((B, T), -1, dtype=torch.long)
        for b, (n_instr, lengths) in enumerate(zip(self.instruction, self.docs)):
            start = n_instr
            for i, n in enumerate(lengths):
                segment_start[b, start : start + n] = start
                doc_of_token[b, start : start + n] = i
                start += n
        return LayoutIndex(
            instruction_len=torch.tensor(self.instruction, dtype=torch.long, device=device),
            row_len=torch.tensor(self.row_lengths, dtype=torch.long, device=device),
            segment_start=segment_start.to(device),
            doc_of_token=doc_of_token.to(device),
        )

    def dense_mask(self, seq_len: int, device: "torch.device | str | None" = None) -> "torch.Tensor":
        """[B, T, T] bool, True where query token i may attend to key token j (the naive reference's mask).

        Key j is allowed for query i when j <= i, both lie inside the row, and j is in the instruction or
        at or after the start of i's own segment (instruction and query tokens: the whole prefix).
        """
        import torch

        idx = self.index(seq_len, device)
        pos = torch.arange(seq_len, device=device)
        i, j = pos[:, None], pos[None, :]
        valid_i = i[None] < idx.row_len[:, None, None]
        in_instruction = j[None] < idx.instruction_len[:, None, None]
        in_own_segment = j[None] >= idx.segment_start[:, :, None]
        return valid_i & (j <= i)[None] & (in_instruction | in_own_segment)
