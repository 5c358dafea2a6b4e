"""Training data for the LLM rerankers: lists of candidates with the teacher's judgement.

One record serves both methods: :class:`RankingExample` is a query with its candidates in the order the
prompt shows them (a ``rankline.formats.Candidates``), the teacher order over them (FIRST's target) and
their relevance grades (BlockRank's positives are the candidates with grade > 0).

Sources:

- **qrels + a first-stage run** (:func:`read_training_examples`, :func:`examples_from_run`): any candidate
  file ``rankline.formats.read_candidates`` reads (TREC run with topics and corpus, requests jsonl,
  rank_llm JSON). Positives are the qrels' documents with grade > 0 (those the run missed are taken from the
  corpus); hard negatives are the run's other documents in its top ``negative_depth``. See
  :class:`ListOptions` for list size, number of positives, negative sampling, shuffling and the seed.
  **The FIRST teacher order**: positives first, by grade descending (equal grades by run rank, then
  docid; positives the run missed after those it found), then the negatives in the run's order.
  **The window order** (what the prompt shows): shuffled with the example's seed (the default, and what
  evaluation must use, so that a model that keeps the given order cannot pass for one that ranks), or the
  run's order with missed positives appended.
- **rank_llm / FIRST ShareGPT JSON** (:func:`read_sharegpt`): a JSON list (or JSONL) of
  ``{"id"?, "conversations": [system, user, assistant]}``, each turn ``{"from", "value"}``, the assistant turn the
  ranking ``[C] > [A] > ...``. Read as :class:`ListwiseConversation` (the prompt is kept as given).
- **BlockRank JSONL** (:func:`read_blockrank_jsonl`): ``{"query", "query_id"?, "documents", "answer_ids"}`` with
  documents ``{"doc_id", "title"?, "text"}`` or plain strings (ids are then their indices), as the official
  code reads it (docs/DATA_FORMAT.md).

Writers produce the two reference formats from our examples, so the same lists can train the reference code.
:func:`split_by_query` holds out a deterministic share of the queries; a query is never in both parts, and
with ``disjoint_positives`` no training query shares a positive passage with a held-out one.
Malformed input raises ``rankline.formats.FormatError`` naming the file and line.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from rankline.formats import (
    Candidates,
    Doc,
    FormatError,
    Hit,
    Query,
    atomic_write,
    iter_corpus,
    open_text,
    read_candidates,
    read_qrels,
)
from rankline.rerankers.prompts import MAX_IDENTIFIERS, SYSTEM, Passage, identifier, listwise_messages, passage_content

PathLike = str | os.PathLike
T = TypeVar("T")
NEGATIVE_SAMPLING = ("top", "sample")
_RANKING_ITEM = re.compile(r"\[\s*([A-Z])\s*\]")
_QUERY_IN_PROMPT = re.compile(r"relevance to the search query: (.*?)\.\n", re.S)


@dataclass(frozen=True)
class RankingExample:
    """A query, its candidates in prompt order, and the teacher's judgement of them.

    order: window positions (indices into ``candidates.hits``), best first: a permutation (FIRST's target).
    grades: relevance grade of each hit (qrels; 0 = not relevant or not judged); None where the source has
        none (ShareGPT rankings). Positives are the hits with grade > 0 (BlockRank's answers).
    """

    candidates: Candidates
    order: tuple[int, ...]
    grades: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.candidates.hits)
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"query {self.qid!r}: order must be a permutation of 0..{n - 1}, got {list(self.order)}")
        if self.grades is not None and len(self.grades) != n:
            raise ValueError(f"query {self.qid!r}: {len(self.grades)} grades for {n} candidates")
        if self.grades is not None:
            ordered = [self.grades[i] for i in self.order]
            if any(a < b for a, b in zip(ordered, ordered[1:])):
                raise ValueError(f"query {self.qid!r}: the teacher order ranks a lower grade above a higher one")

    @property
    def qid(self) -> str:
        return self.candidates.query.qid

    @property
    def query(self) -> Query:
        return self.candidates.query

    @property
    def hits(self) -> tuple[Hit, ...]:
        return self.candidates.hits

    @property
    def positives(self) -> tuple[int, ...]:
        """Window positions with grade > 0, ascending (empty when grades are unknown)."""
        return tuple(i for i, g in enumerate(self.grades or ()) if g > 0)

    def ranking_string(self) -> str:
        """The FIRST target, ``[C] > [A] > ...`` (window positions as identifiers, teacher order)."""
        return " > ".join(f"[{identifier(i)}]" for i in self.order)


@dataclass(frozen=True)
class ListwiseConversation:
    """A rank_llm / FIRST ShareGPT record: the system and user turns as given (the RankZephyr prompt with
    passages [A], [B], ...) and the teacher's ranking as window positions, best first.

    qid: the record's ``id`` (or ``qid`` / ``query_id``); without one, the query parsed from the prompt, so that
    records of one query stay together in :func:`split_by_query`.
    """

    qid: str
    system: str
    user: str
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"record {self.qid!r}: the ranking must be a permutation, got {list(self.order)}")

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def ranking_string(self) -> str:
        return " > ".join(f"[{identifier(i)}]" for i in self.order)


@dataclass(frozen=True)
class ListOptions:
    """How lists are cut from a query's positives and its first-stage candidates.

    list_size: candidates per list (FIRST: at most 26, the identifiers A..Z).
    max_positives: positives per list (None = all); when a query has more, a seeded sample. One slot is kept
        for a negative whenever the query has one.
    negative_depth: hard negatives come from the run's top `negative_depth` documents (those that are not
        positives; judged non-relevant documents are negatives).
    negatives: "top" takes the highest-ranked of them, "sample" a seeded sample (kept in run order).
    shuffle: show the list in a seeded random order (True) or in the run's order (False).
    examples_per_query: lists drawn per query (each with its own seed).
    seed: the seed; an example's random choices depend only on (seed, qid, example index).
    """

    list_size: int = 20
    max_positives: int | None = None
    negative_depth: int = 100
    negatives: str = "top"
    shuffle: bool = True
    examples_per_query: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("list_size", "negative_depth", "examples_per_query"):
            if getattr(self, name) < 1:
                raise ValueError(f"ListOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_positives is not None and self.max_positives < 1:
            raise ValueError(f"ListOptions.max_positives must be >= 1 or None, got {self.max_positives}")
        if self.negatives not in NEGATIVE_SAMPLING:
            raise ValueError(f"ListOptions.negatives must be one of {NEGATIVE_SAMPLING}, got {self.negatives!r}")


@dataclass
class TrainingSet:
    """Examples built from qrels and a run; the queries that gave none (qid -> reason); and per query the
    positives left out for want of a text (neither in the run nor in the corpus)."""

    examples: list[RankingExample]
    skipped: dict[str, str] = field(default_factory=dict)
    unavailable_positives: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _rng(seed: int, qid: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{qid}/{index}")


def sample_list(
    query: Query,
    positives: Sequence[tuple[Hit, int]],
    negatives: Sequence[Hit],
    options: ListOptions,
    rng: random.Random,
    run_rank: Mapping[str, int] | None = None,
) -> RankingExample:
    """One list from a query's positives ((hit, grade), any order) and negatives (first-stage order).

    `run_rank` (docid -> 0-based first-stage rank) orders equal-grade positives and the unshuffled window
    (positives without one come after those with one) and bounds the negatives to ranks < negative_depth
    (without it, the first `negative_depth` negatives).
    """
    if not positives:
        raise ValueError(f"query {query.qid!r}: a training list needs at least one positive")
    run_rank = run_rank or {}
    missing = len(run_rank) + 1

    def first_stage(hit: Hit) -> tuple[int, str]:
        return run_rank.get(hit.docid, missing), hit.docid

    n_pos = len(positives) if options.max_positives is None else min(options.max_positives, len(positives))
    n_pos = min(n_pos, options.list_size - 1 if negatives else options.list_size)
    chosen = list(positives) if n_pos == len(positives) else rng.sample(list(positives), n_pos)
    if run_rank:
        pool = [h for h in negatives if run_rank.get(h.docid, options.negative_depth) < options.negative_depth]
    else:
        pool = list(negatives[: options.negative_depth])
    n_neg = min(options.list_size - n_pos, len(pool))
    if options.negatives == "top":
        picked = pool[:n_neg]
    else:
        picked = [pool[i] for i in sorted(rng.sample(range(len(pool)), n_neg))]
    teacher = [h for h, _ in sorted(chosen, key=lambda hg: (-hg[1], *first_stage(hg[0])))] + picked
    grade_of = {h.docid: g for h, g in chosen}
    if options.shuffle:
        window = list(teacher)
        rng.shuffle(window)
    else:
        window = sorted(teacher, key=first_stage)
    position = {h.docid: i for i, h in enumerate(window)}
    return RankingExample(
        Candidates(query, tuple(window)),
        order=tuple(position[h.docid] for h in teacher),
        grades=tuple(grade_of.get(h.docid, 0) for h in window),
    )


def examples_from_run(
    candidates: Sequence[Candidates],
    qrels: Mapping[str, Mapping[str, int]],
    options: ListOptions = ListOptions(),
    *,
    documents: Mapping[str, Doc] | None = None,
) -> TrainingSet:
    """Lists for every query of `candidates` that has a positive: positives from `qrels` (grade > 0), their text
    from the candidates or else from `documents`; hard negatives from the candidates (see the module docstring)."""
    documents = documents or {}
    out = TrainingSet([])
    for cands in candidates:
        qid = cands.query.qid
        judged = qrels.get(qid, {})
        run_rank = {h.docid: i for i, h in enumerate(cands.hits)}
        if len(run_rank) != len(cands.hits):
            raise ValueError(f"query {qid!r}: a document appears twice in its candidates")
        by_id = {h.docid: h for h in cands.hits}
        positives, unavailable = [], []
        for docid, grade in judged.items():
            if grade <= 0:
                continue
            if docid in by_id:
                positives.append((by_id[docid], grade))
            elif docid in documents:
                doc = documents[docid]
                positives.append((Hit(docid, float("-inf"), doc.text, doc.title), grade))
            else:
                unavailable.append(docid)
        if unavailable:
            out.unavailable_positives[qid] = tuple(unavailable)
        if not positives:
            out.skipped[qid] = ("no positive in the qrels" if not unavailable else
                                f"{len(unavailable)} positive(s), none in the run and no corpus text for them")
            continue
        negatives = [h for h in cands.hits if judged.get(h.docid, 0) <= 0]
        for k in range(options.examples_per_query):
            out.examples.append(sample_list(cands.query, positives, negatives, options, _rng(options.seed, qid, k), run_rank))
    return out


def read_training_examples(
    candidates: PathLike,
    *,
    qrels: PathLike | Mapping[str, Mapping[str, int]],
    topics: PathLike | None = None,
    corpus: PathLike | None = None,
    options: ListOptions = ListOptions(),
) -> TrainingSet:
    """:func:`examples_from_run` from files: `candidates` as ``rankline.formats.read_candidates`` reads it (a TREC
    run needs `topics` and `corpus`; a requests jsonl or rank_llm JSON carries its texts), `qrels` a TREC/BEIR
    qrels file (or a mapping). Positives the run missed get their text from `corpus` when one is given
    (streamed once, only those documents kept); queries of the qrels that are not in the run are skipped."""
    lists = read_candidates(candidates, topics=topics, corpus=corpus if topics is not None else None)
    judgments = read_qrels(qrels) if isinstance(qrels, (str, os.PathLike)) else qrels
    listed = {c.query.qid: {h.docid for h in c.hits} for c in lists}
    wanted = {d for qid, docs in judgments.items() if qid in listed
              for d, g in docs.items() if g > 0 and d not in listed[qid]}
    documents = {}
    if wanted and corpus is not None:
        documents = {doc.docid: doc for doc in iter_corpus(corpus) if doc.docid in wanted}
    out = examples_from_run(lists, judgments, options, documents=documents)
    for qid in judgments:
        if qid not in listed and any(g > 0 for g in judgments[qid].values()):
            out.skipped[qid] = "not in the run"
    return out


def resample(example: RankingExample, options: ListOptions, index: int = 0) -> RankingExample:
    """A new list from an example's positives and negatives (its window order taken as first-stage order),
    e.g. to cut BlockRank JSONL records to `list_size` documents as the official code samples them."""
    if example.grades is None:
        raise ValueError(f"query {example.qid!r}: resampling needs grades (which candidates are positive)")
    positives = [(h, g) for h, g in zip(example.hits, example.grades) if g > 0]
    negatives = [h for h, g in zip(example.hits, example.grades) if g <= 0]
    run_rank = {h.docid: i for i, h in enumerate(example.hits)}
    return sample_list(example.query, positives, negatives, options, _rng(options.seed, example.qid, index), run_rank)


# ------------------------------------------------------------------------------------ held-out split


def split_by_query(
    items: Sequence[T],
    *,
    held_out: float | int,
    seed: int = 0,
    key: Callable[[T], str] = lambda item: item.qid,  # type: ignore[attr-defined]
    disjoint_positives: bool = False,
) -> tuple[list[T], list[T]]:
    """(train, held out): `held_out` queries (a count, or a fraction of the distinct queries, rounded, at least
    one) chosen by a seeded hash of their qid, so the split depends only on (seed, qid) and never puts one
    query's items in both parts. Items keep their order within each part.

    disjoint_positives: also leave out of training every query that shares a positive passage (grade > 0) with
    a held-out query, so a held-out score cannot come from passages the model was taught as positives (in
    SciFact, 33 of 50 held-out training queries cite a passage some other training query cites). Needs graded
    items (:class:`RankingExample` with grades)."""
    qids = list(dict.fromkeys(key(item) for item in items))
    if not qids and not held_out:
        return [], []
    if isinstance(held_out, float):
        if not 0.0 <= held_out < 1.0:
            raise ValueError(f"held_out as a fraction must be in [0, 1), got {held_out}")
        count = 0 if held_out == 0 else max(1, round(held_out * len(qids)))
    else:
        count = held_out
    if not 0 <= count < len(qids) or (count == 0 and held_out):
        raise ValueError(f"cannot hold out {count} of {len(qids)} queries and keep some for training")
    chosen = set(sorted(qids, key=lambda q: hashlib.sha256(f"{seed}\0{q}".encode()).hexdigest())[:count])
    train = [item for item in items if key(item) not in chosen]
    held = [item for item in items if key(item) in chosen]
    if disjoint_positives:
        held_positives = set().union(*map(_positives, held))
        sharing = {key(item) for item in train if _positives(item) & held_positives}
        train = [item for item in train if key(item) not in sharing]
        if not train:
            raise ValueError(f"every training query shares a positive passage with the {count} held-out queries")
    return train, held


def _positives(item: Any) -> set[str]:
    """The docids of an example's positives (grade > 0)."""
    if getattr(item, "grades", None) is None:
        raise ValueError(f"query {getattr(item, 'qid', item)!r}: held-out queries disjoint in positives need graded "
                         "examples (qrels + a run, or BlockRank JSONL), not rankings without grades")
    return {hit.docid for hit, grade in zip(item.hits, item.grades) if grade > 0}


# ------------------------------------------------------------------------------------------- readers


def _json_records(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(line, value) of each record of a JSON list or a JSONL file; the line is where the record starts."""
    with open_text(path) as fh:
        text = fh.read()
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FormatError(path, line_no, f"expected one JSON object per line ({exc.msg})") from None
        return
    decoder = json.JSONDecoder()
    pos, first = start + 1, True
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text[pos:pos + 1] == "]":
            return
        if not first:
            if text[pos:pos + 1] != ",":
                raise FormatError(path, text.count("\n", 0, pos) + 1, "expected ',' or ']' between records")
            pos += 1
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
        line_no = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise FormatError(path, exc.lineno, f"expected a JSON record ({exc.msg})") from None
        first = False
        yield line_no, value


def _str_field(path: PathLike, line: int, obj: Any, key: str, what: str) -> str:
    if not isinstance(obj, dict) or key not in obj:
        raise FormatError(path, line, f"{what}: expected a {key!r} field")
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(path, line, f"{what}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _optional_id(obj: dict, *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


def parse_ranking_string(text: str) -> tuple[int, ...]:
    """Window positions of a ranking ``[C] > [A] > [B]``; ValueError unless it names each of A.. exactly once."""
    letters = _RANKING_ITEM.findall(text)
    order = tuple(ord(c) - 65 for c in letters)
    if not order or sorted(order) != list(range(len(order))):
        raise ValueError(f"expected a ranking of identifiers A.. each named once, like '[B] > [A]', got {text[:80]!r}")
    return order


def read_sharegpt(path: PathLike) -> list[ListwiseConversation]:
    """rank_llm / FIRST training records (module docstring). The first three turns are system, user and
    assistant (as rank_llm reads them, by position; their "from" is checked when present)."""
    expected_roles = (("system",), ("human", "user"), ("gpt", "assistant"))
    out = []
    for line, record in _json_records(path):
        what = "record"
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise FormatError(path, line, "expected a record with a 'conversations' list")
        turns = record["conversations"]
        if len(turns) < 3:
            raise FormatError(path, line, f"expected 3 turns (system, user, assistant), got {len(turns)}")
        values = []
        for k, (turn, roles) in enumerate(zip(turns, expected_roles)):
            what = f"turn {k}"
            value = _str_field(path, line, turn, "value", what)
            role = turn.get("from")
            if role is not None and role not in roles:
                raise FormatError(path, line, f"{what}: expected 'from' to be {' or '.join(map(repr, roles))}, got {role!r}")
            values.append(value)
        system, user, answer = values
        try:
            order = parse_ranking_string(answer)
        except ValueError as exc:
            raise FormatError(path, line, f"assistant turn: {exc}") from None
        if len(order) > MAX_IDENTIFIERS:
            raise FormatError(path, line, f"a window holds at most {MAX_IDENTIFIERS} passages, got {len(order)}")
        shown = set(_RANKING_ITEM.findall(user))
        absent = [identifier(i) for i in order if identifier(i) not in shown]
        if absent:
            raise FormatError(path, line, f"the ranking names [{absent[0]}] but the user turn shows no such passage")
        qid = _optional_id(record, "id", "qid", "query_id")
        if qid is None:
            match = _QUERY_IN_PROMPT.search(user)
            qid = match.group(1) if match else hashlib.sha256(user.encode()).hexdigest()[:16]
        out.append(ListwiseConversation(qid, system, user, order))
    return out


def read_blockrank_jsonl(path: PathLike) -> list[RankingExample]:
    """BlockRank training records (module docstring) as examples: documents in their given order, grade 1 for
    the answers and 0 otherwise, teacher order answers first then the rest (each in document order)."""
    out = []
    for line, record in _json_records(path):
        query = _str_field(path, line, record, "query", "record")
        qid = _optional_id(record, "query_id", "qid") or str(line)
        docs = record.get("documents")
        if not isinstance(docs, list) or not docs:
            raise FormatError(path, line, "expected a non-empty 'documents' list")
        hits = []
        for i, doc in enumerate(docs):
            if isinstance(doc, str):
                hits.append(Hit(str(i), 0.0, doc))
            elif isinstance(doc, dict):
                docid = _optional_id(doc, "doc_id")
                title = doc.get("title") or ""
                if not isinstance(title, str):
                    raise FormatError(path, line, f"document {i}: 'title' must be a string")
                hits.append(Hit(str(i) if docid is None else docid, 0.0, _str_field(path, line, doc, "text", f"document {i}"),
                                title))
            else:
                raise FormatError(path, line, f"document {i}: expected an object or a string, got {type(doc).__name__}")
        ids = [h.docid for h in hits]
        if len(set(ids)) != len(ids):
            raise FormatError(path, line, f"document id {next(d for d in ids if ids.count(d) > 1)!r} appears twice")
        answers = record.get("answer_ids")
        if not isinstance(answers, list):
            raise FormatError(path, line, "expected an 'answer_ids' list")
        answer_set = set()
        for a in answers:
            if not isinstance(a, (str, int)) or isinstance(a, bool) or str(a) not in ids:
                raise FormatError(path, line, f"answer id {a!r} is not the id of one of the documents")
            answer_set.add(str(a))
        grades = tuple(int(h.docid in answer_set) for h in hits)
        order = tuple(sorted(range(len(hits)), key=lambda i: -grades[i]))
        out.append(RankingExample(Candidates(Query(qid, query), tuple(hits)), order, grades))
    return out


# ------------------------------------------------------------------------------------------- writers


def sharegpt_record(example: RankingExample, *, max_words: int = 300) -> dict:
    """The rank_llm training record of an example: the RankZephyr prompt (rank_llm's passage formatting, no
    token fitting) and the teacher ranking as the assistant turn."""
    if len(example.hits) > MAX_IDENTIFIERS:
        raise ValueError(f"query {example.qid!r}: a window holds at most {MAX_IDENTIFIERS} passages")
    contents = [passage_content(Passage(h.text, h.title), max_words) for h in example.hits]
    messages = listwise_messages(example.query.text, contents)
    return {
        "id": example.qid,
        "conversations": [
            {"from": "system", "value": SYSTEM},
            {"from": "human", "value": messages[1]["content"]},
            {"from": "gpt", "value": example.ranking_string()},
        ],
    }


def write_sharegpt(path: PathLike, examples: Iterable[RankingExample], *, max_words: int = 300) -> None:
    """rank_llm training JSON (a list of :func:`sharegpt_record`), written atomically."""
    records = [sharegpt_record(e, max_words=max_words) for e in examples]
    with atomic_write(path) as fh:
        json.dump(records, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


def blockrank_record(example: RankingExample) -> dict:
    if example.grades is None:
        raise ValueError(f"query {example.qid!r}: BlockRank records need grades (which documents are answers)")
    return {
        "query": example.query.text,
        "query_id": example.qid,
        "documents": [{"doc_id": h.docid, "title": h.title, "text": h.text} for h in example.hits],
        "answer_ids": [example.hits[i].docid for i in example.positives],
    }


def write_blockrank_jsonl(path: PathLike, examples: Iterable[RankingExample]) -> None:
    """BlockRank training JSONL (one :func:`blockrank_record` a line), written atomically."""
    with atomic_write(path) as fh:
        for example in examples:
            fh.write(json.dumps(blockrank_record(example), ensure_ascii=False) + "\n")
