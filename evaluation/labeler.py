"""Pointwise LLM relevance labels: an UMBRELA-style 0-3 prompt, and the label distribution read from
the next-token logits over the grade tokens (one forward pass per pair, no sampling).

The labeler works on any Hugging Face-style causal LM and tokenizer passed in (rankline.evaluation
imports nothing else of rankline; `rankline label` loads them with rankline.rerankers.models).
Results are cached in SQLite under the key (model, prompt hash, qid, docid) and committed after
every batch, so an interrupted or repeated job never recomputes a pair.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rankline.evaluation.label_dist import LabelDist

# UMBRELA (Upadhyay et al. 2024), the Bing-style 0-3 relevance prompt, asking for the score directly.
UMBRELA_TEMPLATE = """Given a query and a passage, you must provide a score on an integer scale of 0 to 3 with the following meanings:
0 = represent that the passage has nothing to do with the query,
1 = represents that the passage seems related to the query but does not answer it,
2 = represents that the passage has some answer for the query, but the answer may be a bit unclear, or hidden amongst extraneous information and
3 = represents that the passage is dedicated to the query and contains the exact answer.

Important Instruction: Assign category 1 if the passage is somewhat related to the topic but not completely, category 2 if passage presents something very important related to the entire topic but also has some extra information and category 3 if the passage only and entirely refers to the topic. If none of the above satisfies give it category 0.

Query: {query}
Passage: {passage}

Consider the underlying intent of the search, how well the passage matches it, and how trustworthy it is. Answer with the final score only, in the form "##final score: X"."""


@dataclass(frozen=True)
class LabelPrompt:
    """The prompt (``{query}`` and ``{passage}`` placeholders), the text the answer is forced to start
    with, and the grades 0..grades-1 read from the next token."""

    template: str = UMBRELA_TEMPLATE
    answer_prefix: str = "##final score:"
    grades: int = 4
    max_passage_tokens: int = 512

    def __post_init__(self) -> None:
        for field in ("{query}", "{passage}"):
            if field not in self.template:
                raise ValueError(f"label prompt template lacks the {field} placeholder")
        if not 2 <= self.grades <= 10:
            raise ValueError(f"grades must be 2..10 (single-digit labels), got {self.grades}")

    @property
    def key(self) -> str:
        """Hash of everything that changes the labels (the cache key's prompt part)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pair:
    qid: str
    query: str
    docid: str
    passage: str


class LabelCache:
    """SQLite store of label distributions keyed by (model, prompt hash, qid, docid)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS labels (model TEXT, prompt TEXT, qid TEXT, docid TEXT, probs TEXT,"
                " PRIMARY KEY (model, prompt, qid, docid))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, model: str, prompt: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        found = {}
        with closing(self._connect()) as db:
            for qid, docid in keys:
                row = db.execute(
                    "SELECT probs FROM labels WHERE model=? AND prompt=? AND qid=? AND docid=?", (model, prompt, qid, docid)
                ).fetchone()
                if row is not None:
                    found[qid, docid] = np.array(json.loads(row[0]))
        return found

    def put(self, model: str, prompt: str, items: dict[tuple[str, str], np.ndarray]) -> None:
        with closing(self._connect()) as db, db:  # one transaction per batch
            db.executemany(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
                [(model, prompt, q, d, json.dumps([float(p) for p in probs])) for (q, d), probs in items.items()],
            )


def default_cache_path() -> Path:
    """$RANKLINE_CACHE/labels.sqlite (default ~/.cache/rankline)."""
    return Path(os.environ.get("RANKLINE_CACHE", Path.home() / ".cache" / "rankline")).expanduser() / "labels.sqlite"


class RelevanceLabeler:
    """p(grade | query, passage) for each pair from one forward pass of a causal LM.

    The prompt goes through the tokenizer's chat template when it has one; the answer prefix is
    appended after the assistant turn starts, and the distribution is the softmax of the next-token
    logits restricted to the grade tokens. Batches are left-padded with explicit position ids, so a
    pair's label does not depend on its batch.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        prompt: LabelPrompt = LabelPrompt(),
        batch_size: int = 8,
        cache: LabelCache | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.prompt, self.batch_size, self.cache = prompt, batch_size, cache
        self._prefix, self._grade_ids = self._grade_tokens()

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _grade_tokens(self) -> tuple[str, list[int]]:
        """An answer prefix after which every grade is exactly one token, and those tokens."""
        base = self.prompt.answer_prefix
        for prefix, fmt in ((base, " {}"), (base, "{}"), (base + " ", "{}")):
            head = self._encode(prefix)
            ids = []
            for grade in range(self.prompt.grades):
                full = self._encode(prefix + fmt.format(grade))
                if full[: len(head)] != head or len(full) != len(head) + 1:
                    break
                ids.append(full[-1])
            if len(ids) == self.prompt.grades and len(set(ids)) == len(ids):
                return prefix, ids
        raise ValueError(f"the tokenizer does not give the grades 0..{self.prompt.grades - 1} one token each after "
                         f"{base!r}; use another answer prefix")

    def _text(self, pair: Pair) -> str:
        passage_ids = self._encode(pair.passage)[: self.prompt.max_passage_tokens]
        user = self.prompt.template.format(query=pair.query, passage=self.tokenizer.decode(passage_ids))
        if getattr(self.tokenizer, "chat_template", None):
            head = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
            )
            return head + self._prefix
        return (self.tokenizer.bos_token or "") + user + "\n" + self._prefix

    def _forward(self, pairs: Sequence[Pair]) -> np.ndarray:
        import torch

        encoded = [self._encode(self._text(p)) for p in pairs]
        width = max(map(len, encoded))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, self._grade_ids].float()
            return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)

    def label(self, pairs: Iterable[Pair], *, progress: bool = True) -> LabelDist:
        """Label distributions of all pairs (cached pairs are read, the rest computed batch by batch)."""
        from tqdm import tqdm

        pairs = list(pairs)
        keys = [(p.qid, p.docid) for p in pairs]
        done = self.cache.get(self.model_name, self.prompt.key, keys) if self.cache else {}
        todo = [p for p in pairs if (p.qid, p.docid) not in done]
        with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="label", unit="pair",
                  disable=None if progress else True) as bar:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                probs = dict(zip(((p.qid, p.docid) for p in batch), self._forward(batch)))
                if self.cache:
                    self.cache.put(self.model_name, self.prompt.key, probs)
                done.update(probs)
                bar.update(len(batch))
        out: LabelDist = {}
        for qid, docid in keys:
            out.setdefault(qid, {})[docid] = done[qid, docid]
        return out
