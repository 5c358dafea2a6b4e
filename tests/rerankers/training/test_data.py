"""Training data: lists from qrels + a run (positives, hard negatives, the stated teacher order, seeded
shuffling), the reference formats read unchanged and written back, errors naming file and line, and the
held-out split by query."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rankline.formats import Candidates, FormatError, Hit, Query
from rankline.rerankers.prompts import SYSTEM, Passage, listwise_messages, passage_content
from rankline.rerankers.training.data import (
    ListOptions,
    ListwiseConversation,
    RankingExample,
    examples_from_run,
    parse_ranking_string,
    read_blockrank_jsonl,
    read_sharegpt,
    read_training_examples,
    resample,
    split_by_query,
    write_blockrank_jsonl,
    write_sharegpt,
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """q1: run d1..d8 (scores 8..1); qrels d3 = 2, d9 = 1 (not retrieved, in the corpus), d5 = 0, d7 = 1.
    q2: in the run, no positive. q3: positives, not in the run. q4: its only positive is nowhere."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"}) + "\n" for i in range(1, 12)))
    topics = tmp_path / "queries.jsonl"
    topics.write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(1, 5)))
    run = tmp_path / "run.trec"
    lines = [f"q1 Q0 d{i} {i} {9 - i} bm25" for i in range(1, 9)]
    lines += [f"q2 Q0 d{i} {i} {5 - i} bm25" for i in range(1, 4)]
    lines += [f"q4 Q0 d{i} {i} {5 - i} bm25" for i in range(1, 4)]
    run.write_text("\n".join(lines) + "\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td3\t2\nq1\td9\t1\nq1\td5\t0\nq1\td7\t1\n"
                     "q2\td1\t0\nq3\td2\t1\nq4\tmissing\t1\n")
    return {"corpus": corpus, "topics": topics, "run": run, "qrels": qrels}


def read(files, **options) -> list[RankingExample]:
    return read_training_examples(files["run"], qrels=files["qrels"], topics=files["topics"], corpus=files["corpus"],
                                  options=ListOptions(**options)).examples


def ids(example: RankingExample, positions) -> list[str]:
    return [example.hits[i].docid for i in positions]


def test_positives_from_qrels_negatives_from_the_run_and_the_stated_teacher_order(files):
    built = read_training_examples(files["run"], qrels=files["qrels"], topics=files["topics"], corpus=files["corpus"],
                                   options=ListOptions(list_size=5, shuffle=False))
    assert [e.qid for e in built.examples] == ["q1"]
    assert built.skipped.keys() == {"q2", "q3", "q4"}
    assert "no positive" in built.skipped["q2"] and built.skipped["q3"] == "not in the run"
    assert "none in the run" in built.skipped["q4"]
    (ex,) = built.examples
    # positives by grade (d3: 2; d7 and d9: 1, d7 retrieved first), then the top negatives in run order
    # (d5 is judged 0: a negative)
    assert ids(ex, ex.order) == ["d3", "d7", "d9", "d1", "d2"]
    # unshuffled: the run's order, the positive the run missed at the end
    assert [h.docid for h in ex.hits] == ["d1", "d2", "d3", "d7", "d9"]
    assert ex.grades == (0, 0, 2, 1, 1) and ex.positives == (2, 3, 4)
    assert ex.hits[4].title == "T9" and ex.hits[4].text == "text 9"  # from the corpus
    assert ex.query == Query("q1", "query 1")
    assert ex.ranking_string() == "[C] > [D] > [E] > [A] > [B]"


def test_candidates_that_carry_their_texts_take_missing_positives_from_the_corpus(files, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"qid": "q1", "query": "query 1", "candidates": [
        {"docid": f"d{i}", "score": 9.0 - i, "text": f"text {i}"} for i in range(1, 9)]}) + "\n")
    with_corpus = read_training_examples(requests, qrels=files["qrels"], corpus=files["corpus"],
                                         options=ListOptions(list_size=5, shuffle=False))
    assert ids(with_corpus.examples[0], with_corpus.examples[0].order) == ["d3", "d7", "d9", "d1", "d2"]
    without = read_training_examples(requests, qrels=files["qrels"], options=ListOptions(list_size=5, shuffle=False))
    assert ids(without.examples[0], without.examples[0].order) == ["d3", "d7", "d1", "d2", "d4"]  # d9 has no text
    assert without.unavailable_positives == {"q1": ("d9",)} and with_corpus.unavailable_positives == {}


def test_shuffling_is_seeded_and_keeps_the_teacher_order(files):
    a = read(files, list_size=6)
    b = read(files, list_size=6)
    c = read(files, list_size=6, seed=1)
    assert a == b
    assert [h.docid for h in a[0].hits] != [h.docid for h in c[0].hits]
    unshuffled = read(files, list_size=6, shuffle=False)[0]
    for ex in (a[0], c[0]):
        assert ids(ex, ex.order) == ids(unshuffled, unshuffled.order)
        assert sorted(h.docid for h in ex.hits) == sorted(h.docid for h in unshuffled.hits)


def test_list_size_positives_and_negative_sampling(files):
    one = read(files, list_size=4, max_positives=1, shuffle=False)[0]
    assert len(one.positives) == 1 and len(one.hits) == 4
    sampled = read(files, list_size=4, max_positives=1, negatives="sample", negative_depth=6, examples_per_query=5)
    assert len(sampled) == 5 and len({tuple(h.docid for h in e.hits) for e in sampled}) > 1
    for ex in sampled:
        negatives = [h.docid for h, g in zip(ex.hits, ex.grades) if g == 0]
        assert set(negatives) <= {"d1", "d2", "d4", "d5", "d6"}  # the run's top 6 that are not positives
        teacher_negatives = [d for d in ids(ex, ex.order) if d in negatives]
        assert teacher_negatives == sorted(teacher_negatives, key=lambda d: int(d[1:]))  # run order
    # every positive fits: one slot is kept for a negative
    assert len(read(files, list_size=3, shuffle=False)[0].positives) == 2


def test_an_example_depends_only_on_seed_qid_and_index(files):
    cands = Candidates(Query("q1", "query 1"), tuple(Hit(f"d{i}", 9.0 - i, f"text {i}") for i in range(1, 9)))
    other = Candidates(Query("q0", "query 0"), tuple(Hit(f"x{i}", 1.0, "x") for i in range(3)))
    qrels = {"q1": {"d3": 1, "d6": 2}, "q0": {"x1": 1}}
    opts = ListOptions(list_size=4, examples_per_query=2)
    alone = examples_from_run([cands], qrels, opts).examples
    mixed = examples_from_run([other, cands], qrels, opts).examples
    assert alone == [e for e in mixed if e.qid == "q1"]


def test_a_document_twice_in_a_list_is_an_error():
    cands = Candidates(Query("q", "t"), (Hit("d", 1.0, "a"), Hit("d", 0.5, "a")))
    with pytest.raises(ValueError, match="twice"):
        examples_from_run([cands], {"q": {"d": 1}})


def test_bad_input_names_file_and_line(files, tmp_path):
    bad = tmp_path / "bad_qrels.txt"
    bad.write_text("q1 0 d1 1\nq1 0 d2\n")
    with pytest.raises(FormatError, match=r"bad_qrels.txt:2"):
        read_training_examples(files["run"], qrels=bad, topics=files["topics"], corpus=files["corpus"])
    with pytest.raises(ValueError, match="list_size"):
        ListOptions(list_size=0)
    with pytest.raises(ValueError, match="negatives"):
        ListOptions(negatives="random")


# ------------------------------------------------------------------------------- reference formats


def sharegpt(answer: str, user: str = "[A] one\n[B] two\n[C] three\nrelevance to the search query: cats.\n", **extra):
    return {**extra, "conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": user},
                                       {"from": "gpt", "value": answer}]}


def test_sharegpt_json_list_and_jsonl(tmp_path):
    as_list = tmp_path / "train.json"
    as_list.write_text(json.dumps([sharegpt("[B] > [C] > [A]", id="7"), sharegpt("[A] > [C] > [B]")], indent=2))
    records = read_sharegpt(as_list)
    assert [r.order for r in records] == [(1, 2, 0), (0, 2, 1)]
    assert records[0].qid == "7" and records[1].qid == "cats"  # no id: the query of the prompt
    assert records[0].system == SYSTEM and records[0].user.startswith("[A] one")
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(sharegpt(a)) for a in ("[C] > [B] > [A]", "[B] > [A] > [C]")) + "\n")
    assert [r.order for r in read_sharegpt(jsonl)] == [(2, 1, 0), (1, 0, 2)]


@pytest.mark.parametrize("record, message", [
    (sharegpt("[B] > [B] > [A]"), "each named once"),
    (sharegpt("[A] > [B] > [C] > [D]"), r"names \[D\]"),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "u"}]}, "3 turns"),
    ({"conversation": []}, "'conversations'"),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "u"},
                        {"from": "gpt", "value": "[A]"}]}, "'human' or 'user'"),
])
def test_bad_sharegpt_records_name_the_line(tmp_path, record, message):
    path = tmp_path / "train.json"
    good = json.dumps(sharegpt("[A] > [B] > [C]"), indent=1)
    path.write_text("[\n" + good + ",\n" + json.dumps(record) + "\n]\n")
    line = 2 + good.count("\n") + 1
    with pytest.raises(FormatError, match=rf"train.json:{line}: .*{message}"):
        read_sharegpt(path)


def test_blockrank_jsonl_both_document_formats(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"query": "capital of france", "query_id": "q1", "answer_ids": ["p"],
                    "documents": [{"doc_id": "b", "title": "Berlin", "text": "Berlin is..."},
                                  {"doc_id": "p", "title": "Paris", "text": "Paris is..."}]}) + "\n\n"
        + json.dumps({"query": "two", "documents": ["zero", "one", "two"], "answer_ids": [2, 0]}) + "\n")
    first, second = read_blockrank_jsonl(path)
    assert first.qid == "q1" and [h.docid for h in first.hits] == ["b", "p"] and first.hits[1].title == "Paris"
    assert first.grades == (0, 1) and first.positives == (1,) and first.order == (1, 0)
    assert second.qid == "3" and [h.text for h in second.hits] == ["zero", "one", "two"]  # no id: its line
    assert second.positives == (0, 2) and second.order == (0, 2, 1)


@pytest.mark.parametrize("record, message", [
    ({"query": "q", "documents": ["a", "b"], "answer_ids": [5]}, "answer id 5"),
    ({"query": "q", "documents": [{"doc_id": "x", "text": "a"}, {"doc_id": "x", "text": "b"}], "answer_ids": ["x"]}, "twice"),
    ({"query": "q", "documents": [], "answer_ids": []}, "non-empty"),
    ({"documents": ["a"], "answer_ids": [0]}, "'query'"),
    ({"query": "q", "documents": [{"doc_id": "x"}], "answer_ids": []}, "'text'"),
])
def test_bad_blockrank_records_name_the_line(tmp_path, record, message):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query": "ok", "documents": ["a"], "answer_ids": [0]}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(FormatError, match=rf"train.jsonl:2: .*{message}"):
        read_blockrank_jsonl(path)


def test_written_reference_files_read_back(files, tmp_path):
    examples = read(files, list_size=5)
    write_blockrank_jsonl(tmp_path / "br.jsonl", examples)
    (back,) = read_blockrank_jsonl(tmp_path / "br.jsonl")
    (ex,) = examples
    assert back.qid == ex.qid and back.hits == tuple(Hit(h.docid, 0.0, h.text, h.title) for h in ex.hits)
    assert back.grades == tuple(int(g > 0) for g in ex.grades)
    write_sharegpt(tmp_path / "sg.json", examples)
    (conv,) = read_sharegpt(tmp_path / "sg.json")
    contents = [passage_content(Passage(h.text, h.title)) for h in ex.hits]
    assert conv == ListwiseConversation(ex.qid, SYSTEM, listwise_messages(ex.query.text, contents)[1]["content"], ex.order)


def test_resample_cuts_a_long_record_to_a_shuffled_list(tmp_path):
    docs = [f"doc {i}" for i in range(30)]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query": "q", "query_id": "a", "documents": docs, "answer_ids": [4, 17]}) + "\n")
    (ex,) = read_blockrank_jsonl(path)
    cut = resample(ex, ListOptions(list_size=8, negatives="sample", negative_depth=30, seed=3))
    assert len(cut.hits) == 8 and {cut.hits[i].docid for i in cut.positives} == {"4", "17"}
    assert cut == resample(ex, ListOptions(list_size=8, negatives="sample", negative_depth=30, seed=3))


def test_parse_ranking_string():
    assert parse_ranking_string("[C] > [A] > [B]") == (2, 0, 1)
    assert parse_ranking_string("[ B ]>[A]") == (1, 0)
    with pytest.raises(ValueError):
        parse_ranking_string("[A] > [C]")


def test_example_validation():
    cands = Candidates(Query("q", "t"), (Hit("a", 1.0), Hit("b", 0.5)))
    with pytest.raises(ValueError, match="permutation"):
        RankingExample(cands, (0, 0))
    with pytest.raises(ValueError, match="lower grade"):
        RankingExample(cands, (0, 1), (0, 1))


# ------------------------------------------------------------------------------------ held-out split


def test_split_by_query_is_seeded_disjoint_and_keeps_queries_whole():
    items = [(f"q{i % 10}", i) for i in range(40)]  # 10 queries, 4 items each
    key = lambda item: item[0]  # noqa: E731
    train, held = split_by_query(items, held_out=0.2, seed=0, key=key)
    again = split_by_query(items, held_out=0.2, seed=0, key=key)
    assert (train, held) == again
    assert len({key(x) for x in held}) == 2 and len(held) == 8 and len(train) == 32
    assert not {key(x) for x in train} & {key(x) for x in held}
    assert [x for x in items if x in held] == held  # input order kept
    others = {frozenset(key(x) for x in split_by_query(items, held_out=2, seed=s, key=key)[1]) for s in range(6)}
    assert len(others) > 1  # the seed decides
    # a query's place depends on (seed, qid) only: dropping queries that were not held out changes nothing
    held_full = {key(x) for x in split_by_query(items, held_out=3, seed=3, key=key)[1]}
    fewer = [x for x in items if key(x) in held_full or key(x) in {"q0", "q1", "q2", "q3", "q4"}]
    assert {key(x) for x in split_by_query(fewer, held_out=3, seed=3, key=key)[1]} == held_full


def test_split_by_query_on_examples_and_errors(files):
    examples = read(files, list_size=4, examples_per_query=3)
    with pytest.raises(ValueError, match="keep some"):
        split_by_query(examples, held_out=1)  # one query: nothing left to train on
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_by_query(examples, held_out=1.5)
    train, held = split_by_query(examples, held_out=0)
    assert train == examples and held == []


def test_held_out_queries_disjoint_in_positives_leave_out_the_training_queries_that_share_one():
    # positives: q0 {a}, q1 {a, b}, q2 {c}, q3 {d}, q4 {b}, q5 {e}; with q1 held out, q0 (a) and q4 (b) share one
    positives = {"q0": "a", "q1": "ab", "q2": "c", "q3": "d", "q4": "b", "q5": "e"}

    def example(qid: str) -> RankingExample:
        hits = tuple(Hit(d, 1.0, d) for d in positives[qid] + "xy")
        grades = tuple(1 if h.docid in positives[qid] else 0 for h in hits)
        return RankingExample(Candidates(Query(qid, qid), hits), tuple(range(len(hits))), grades)

    examples = [example(q) for _ in range(2) for q in positives]  # two lists a query, interleaved
    seed = next(s for s in range(100) if {e.qid for e in split_by_query(examples, held_out=1, seed=s)[1]} == {"q1"})
    plain_train, plain_held = split_by_query(examples, held_out=1, seed=seed)
    train, held = split_by_query(examples, held_out=1, seed=seed, disjoint_positives=True)
    assert held == plain_held and len(plain_train) == 10
    assert train == [e for e in plain_train if e.qid in {"q2", "q3", "q5"}]  # both lists of each, in input order
    with pytest.raises(ValueError, match="every training query shares"):
        split_by_query([e for e in examples if e.qid in {"q0", "q1", "q4"}], held_out=1, seed=seed, disjoint_positives=True)
    ungraded = [RankingExample(e.candidates, e.order) for e in examples]
    with pytest.raises(ValueError, match="need graded examples"):
        split_by_query(ungraded, held_out=1, seed=seed, disjoint_positives=True)


def test_importing_the_training_package_loads_no_torch():
    code = ("import sys, rankline.rerankers.training; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
