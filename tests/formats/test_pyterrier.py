"""The PyTerrier bridge's conversions: PyTerrier's rank and tie conventions on hand-made frames, the
round trip of runs, qrels and topics, and pt.Experiment with ir_measures' names giving the same numbers
as rankline's Evaluator on the same runs (real DL 2019 runs, and a run full of ties)."""
from __future__ import annotations

import ir_measures
import pandas as pd
import pyterrier as pt
import pytest

from rankline.evaluation.metrics import evaluate, mean_scores
from rankline.formats import Candidates, Hit, read_qrels, read_run
from rankline.formats.pyterrier import (
    RerankerTransformer,
    RetrieverTransformer,
    frame_run,
    qrels_frame,
    run_frame,
    topics_frame,
)

MEASURES = ["nDCG@10", "nDCG@100", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)", "P(rel=2)@10"]


def fixed_hits(queries, k):
    """q1: three hits, the last two tied; q2: none; q3: one."""
    table = {"q1": [Hit("a", 2.0, "ta"), Hit("z", 1.0, "tz"), Hit("b", 1.0, "tb")], "q2": [], "q3": [Hit("c", 0.5, "tc")]}
    return [table[q.qid][:k] for q in queries]


def test_retriever_frame_keeps_pyterrier_conventions():
    topics = pd.DataFrame({"qid": ["q3", "q1", "q2"], "query": ["x", "y", "z"], "query_0": ["X", "Y", "Z"]})
    out = RetrieverTransformer(fixed_hits, 3, "Fixed")(topics)
    # Queries in input order, hits best first; the tie z, b keeps the retriever's order (add_ranks' "first").
    assert out[["qid", "docno", "score", "rank"]].values.tolist() == [
        ["q3", "c", 0.5, 0], ["q1", "a", 2.0, 0], ["q1", "z", 1.0, 1], ["q1", "b", 1.0, 2]]
    assert out["text"].tolist() == ["tc", "ta", "tz", "tb"] and "title" not in out.columns  # no hit has a title
    assert out["query_0"].tolist() == ["X", "Y", "Y", "Y"] and out["query"].tolist() == ["x", "y", "y", "y"]
    assert (RetrieverTransformer(fixed_hits, 3, "Fixed") % 1)(topics)["docno"].tolist() == ["c", "a"]
    empty = RetrieverTransformer(fixed_hits, 3, "Fixed")(topics.iloc[:0])
    assert len(empty) == 0 and {"qid", "docno", "score", "rank"} <= set(empty.columns)


def test_reranker_orders_by_rank_then_rescored_and_reranked():
    seen: list[list[Candidates]] = []

    def reverse(lists):
        seen.append(list(lists))
        return [[Hit(h.docid, float(i)) for i, h in enumerate(c.hits)][::-1] for c in lists]

    frame = pd.DataFrame({"qid": ["q1", "q2", "q1", "q1"], "query": ["a b", "c", "a b", "a b"],
                          "docno": ["d3", "e1", "d1", "d2"], "text": ["t3", "u1", "t1", "t2"],
                          "score": [1.0, 9.0, 1.0, 5.0], "rank": [2, 0, 0, 1], "keep": [3, 4, 1, 2]})
    out = RerankerTransformer(reverse, "Reverse")(frame)
    # The reranker saw each query's candidates in rank order (rank beats the tied score 1.0 of d1 and d3).
    assert [[h.docid for h in c.hits] for c in seen[0]] == [["d1", "d2", "d3"], ["e1"]]
    assert [(c.query.qid, c.query.text, c.hits[0].text) for c in seen[0]] == [("q1", "a b", "t1"), ("q2", "c", "u1")]
    assert out[["qid", "docno", "score", "rank", "keep"]].values.tolist() == [
        ["q1", "d3", 2.0, 0, 3], ["q1", "d2", 1.0, 1, 2], ["q1", "d1", 0.0, 2, 1], ["q2", "e1", 0.0, 0, 4]]
    # Without a rank column the first stage's score decides; without either, the row order.
    assert RerankerTransformer(reverse, "Reverse")(frame.drop(columns=["rank"]))["docno"].tolist()[:3] == ["d1", "d3", "d2"]
    assert RerankerTransformer(reverse, "Reverse")(frame.drop(columns=["rank", "score"]))["docno"].tolist()[:3] == [
        "d2", "d1", "d3"]


def test_a_reranker_that_loses_a_document_is_an_error():
    frame = pd.DataFrame({"qid": ["q"] * 2, "query": ["x"] * 2, "docno": ["a", "b"], "text": ["s", "t"]})
    with pytest.raises(ValueError, match="other documents than it was given for query 'q'"):
        RerankerTransformer(lambda lists: [[c.hits[0]] for c in lists], "Lossy")(frame)


def test_runs_qrels_topics_round_trip():
    run = {"q2": {"x": 1.0, "y": 3.0, "w": 3.0}, "q1": {"a": -1.5}}
    frame = run_frame(run)
    # trec_eval would put w before y (tie, docid descending); PyTerrier ranks a tie in row order.
    assert frame.values.tolist() == [["q2", "y", 3.0, 0], ["q2", "w", 3.0, 1], ["q2", "x", 1.0, 2], ["q1", "a", -1.5, 0]]
    assert frame_run(frame) == run
    assert qrels_frame({"q1": {"a": 2, "b": 0}}).values.tolist() == [["q1", "a", 2], ["q1", "b", 0]]
    assert topics_frame({"q1": "text one"}).values.tolist() == [["q1", "text one"]]
    with pytest.raises(ValueError, match="document 'y' appears twice for query 'q2'"):
        frame_run(pd.concat([frame, frame]))


def _experiment_equals_evaluator(qrels, runs, measure_names=tuple(MEASURES)):
    """pt.Experiment's mean and per-query numbers for `measure_names` equal the Evaluator's."""
    measures = [ir_measures.parse_measure(m) for m in measure_names]  # PyTerrier parses only trec_eval's names itself
    names = list(runs)
    topics = pd.DataFrame({"qid": sorted({q for run in runs.values() for q in run} | set(qrels))})
    table = pt.Experiment([run_frame(runs[n]) for n in names], topics, qrels_frame(qrels), measures, names=names)
    per_query = pt.Experiment([run_frame(runs[n]) for n in names], topics, qrels_frame(qrels), measures, names=names,
                              perquery=True)
    for name in names:
        ours = evaluate(qrels, runs[name], list(measure_names))
        theirs = table.set_index("name").loc[name]
        for measure, value in mean_scores(ours).items():
            assert theirs[measure] == pytest.approx(value, abs=1e-12), (name, measure)
        # PyTerrier reports a topic without judgements as NaN (left out of its means); trec_eval leaves it out.
        rows = per_query[(per_query["name"] == name) & per_query["value"].notna()]
        assert {(r.qid, r.measure): r.value for r in rows.itertuples()} == pytest.approx(
            {(qid, m): v for m, values in ours.items() for qid, v in values.items()}, abs=1e-12)


def test_experiment_equals_the_evaluator_on_dl2019_runs(data_dir):
    dl19 = data_dir / "trec-dl-2019"
    qrels = read_qrels(dl19 / "qrels.dl19-passage.txt")
    runs = {name: read_run(dl19 / "candidates" / f"{name}.trec") for name in ("BM25", "D_BERT_KD_TASB")}
    runs["ICT-BERT2"] = read_run(dl19 / "runs" / "ICT-BERT2")
    _experiment_equals_evaluator(qrels, runs)


def test_experiment_equals_the_evaluator_on_ties():
    """Every score tied within a query. For the measures ir_measures computes with pytrec_eval, trec_eval's
    order decides ties (docid descending) in both. RR with a cut-off comes from ir_measures' msmarco
    provider, which breaks ties by docid ascending: its numbers equal the Evaluator's on the run with its
    ties broken that way, and differ from trec_eval's here."""
    import random

    rng = random.Random(0)
    qrels = {f"q{q}": {f"d{d}": rng.randint(0, 3) for d in rng.sample(range(40), 15)} for q in range(8)}
    runs = {"ties": {f"q{q}": {f"d{d}": float(d % 3) for d in rng.sample(range(40), 30)} for q in range(8)},
            "flat": {f"q{q}": {f"d{d}": 1.0 for d in range(40)} for q in range(8)}}
    rr = "RR(rel=2)@10"
    _experiment_equals_evaluator(qrels, runs, [m for m in MEASURES if m != rr])
    ascending = {name: {qid: {d: float(-i) for i, (d, _) in enumerate(sorted(docs.items(), key=lambda x: (-x[1], x[0])))}
                        for qid, docs in run.items()} for name, run in runs.items()}
    table = pt.Experiment([run_frame(runs[n]) for n in runs], pd.DataFrame({"qid": sorted(qrels)}), qrels_frame(qrels),
                          [ir_measures.parse_measure(rr)], names=list(runs)).set_index("name")
    for name in runs:
        assert table.loc[name, rr] == pytest.approx(mean_scores(evaluate(qrels, ascending[name], [rr]))[rr], abs=1e-12)
        assert table.loc[name, rr] != pytest.approx(mean_scores(evaluate(qrels, runs[name], [rr]))[rr], abs=1e-6)
