"""Metrics: every per-topic value equals stock trec_eval's, pytrec_eval's, and hand-computed cases."""
from __future__ import annotations

import collections
import math
from pathlib import Path

import ir_measures
import numpy as np
import pytest
import pytrec_eval

from rankline.formats import read_qrels, read_run
from rankline.evaluation.measures import AP, DCG, NDCG, RR, Judged, Measure, Precision, Recall, parse_measure
from rankline.evaluation.metrics import Evaluator, evaluate, mean, mean_scores

# trec_eval measure name -> ours (the golden files were made at relevance level 1)
TREC_EVAL_NAMES = {"map": "AP", "recip_rank": "RR", "P_10": "P@10", "ndcg_cut_10": "nDCG@10", "ndcg_cut_100": "nDCG@100"}


def _trec_eval_output(*paths: Path) -> dict[str, dict[str, float]]:
    """Parse `trec_eval -q` output into {measure: {qid or 'all': value}}."""
    out: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for path in paths:
        for line in path.read_text().splitlines():
            name, qid, value = line.split()
            if name != "runid":
                out[name][qid] = float(value)
    return out


def _golden_cases(data_dir: Path) -> list[tuple[Path, Path, list[Path]]]:
    dl21, dl19 = data_dir / "trec-dl-2021", data_dir / "trec-dl-2019"
    cases = [
        (dl21 / "qrels-pass.txt", run, [dl21 / "trec_eval" / f"{run.name[:-3]}.{ext}" for ext in ("treceval", "ndcgeval")])
        for run in sorted((dl21 / "runs").glob("*.gz"))
    ]
    cases += [
        (dl19 / "qrels.dl19-passage.txt", run, [dl19 / "trec_eval" / ext / f"{run.name}.{ext}" for ext in ("treceval", "ndcgeval")])
        for run in sorted((dl19 / "runs").iterdir())
    ]
    assert len(cases) == 15
    return cases


def test_every_per_topic_value_equals_stock_trec_eval(data_dir: Path) -> None:
    checked = 0
    for qrels_path, run_path, golden_paths in _golden_cases(data_dir):
        golden = _trec_eval_output(*golden_paths)
        ours = evaluate(read_qrels(qrels_path), read_run(run_path), list(TREC_EVAL_NAMES.values()))
        for te_name, name in TREC_EVAL_NAMES.items():
            expected = {q: v for q, v in golden[te_name].items() if q != "all"}
            assert set(ours[name]) == set(expected), (run_path.name, te_name)
            for qid, value in expected.items():
                assert ours[name][qid] == pytest.approx(value, abs=5.1e-5), (run_path.name, te_name, qid)
                checked += 1
            assert mean(ours[name]) == pytest.approx(golden[te_name]["all"], abs=5.1e-5), (run_path.name, te_name)
    assert checked > 3000


def test_single_precision_scores_decide_ties_like_trec_eval(data_dir: Path) -> None:
    """ielab-uniCOIL has scores that differ only beyond float32 precision: trec_eval ties them."""
    dl21 = data_dir / "trec-dl-2021"
    run = read_run(dl21 / "runs/ielab-uniCOIL.gz")
    ap = evaluate(read_qrels(dl21 / "qrels-pass.txt"), run, ["AP"])["AP"]
    assert ap["1104447"] == pytest.approx(0.2074, abs=5e-5)  # 0.2075 if compared in double precision


@pytest.mark.parametrize("rel", [1, 2])
def test_matches_pytrec_eval(data_dir: Path, rel: int) -> None:
    names = {"recall_100": f"R{f'(rel={rel})' if rel != 1 else ''}@100",
             "recall_1000": f"R{f'(rel={rel})' if rel != 1 else ''}@1000",
             "map": f"AP{f'(rel={rel})' if rel != 1 else ''}",
             "map_cut_10": f"AP{f'(rel={rel})' if rel != 1 else ''}@10",
             "recip_rank": f"RR{f'(rel={rel})' if rel != 1 else ''}",
             "P_10": f"P{f'(rel={rel})' if rel != 1 else ''}@10",
             "P_5": f"P{f'(rel={rel})' if rel != 1 else ''}@5",
             "ndcg_cut_10": "nDCG@10", "ndcg_cut_1000": "nDCG@1000", "ndcg": "nDCG"}
    for qrels_path, run_path, _ in _golden_cases(data_dir):
        qrels, run = read_qrels(qrels_path), read_run(run_path)
        reference = pytrec_eval.RelevanceEvaluator(qrels, set(names), relevance_level=rel).evaluate(run)
        ours = evaluate(qrels, run, list(names.values()))
        for te_name, name in names.items():
            assert set(ours[name]) == set(reference)
            for qid, values in reference.items():
                assert ours[name][qid] == pytest.approx(values[te_name], abs=1e-9), (run_path.name, te_name, qid)


def test_rr_at_k_is_recip_rank_cut_and_dcg_is_unnormalised(data_dir: Path) -> None:
    dl19 = data_dir / "trec-dl-2019"
    qrels, run = read_qrels(dl19 / "qrels.dl19-passage.txt"), read_run(dl19 / "candidates/BM25.trec")
    res = evaluate(qrels, run, ["RR(rel=2)", "RR(rel=2)@10", "nDCG@10", "DCG@10"])
    for qid, rr in res["RR(rel=2)"].items():
        assert res["RR(rel=2)@10"][qid] == (rr if rr >= 0.1 else 0.0)
    # published nDCG@10 of this run (shared data README)
    assert mean(res["nDCG@10"]) == pytest.approx(0.5058, abs=5e-5)
    ideal = {q: sum(g / math.log2(i + 2) for i, g in enumerate(sorted(d.values(), reverse=True)[:10])) for q, d in qrels.items()}
    for qid, dcg in res["DCG@10"].items():
        assert res["nDCG@10"][qid] == pytest.approx(dcg / ideal[qid])


def test_judged_matches_ir_measures(data_dir: Path) -> None:
    dl19 = data_dir / "trec-dl-2019"
    qrels, run = read_qrels(dl19 / "qrels.dl19-passage.txt"), read_run(dl19 / "runs/ICT-CKNRM_B")
    ours = evaluate(qrels, run, ["Judged@10", "Judged@100"])
    for metric in ir_measures.iter_calc([ir_measures.Judged @ 10, ir_measures.Judged @ 100], qrels, run):
        assert ours[str(metric.measure)][metric.query_id] == pytest.approx(metric.value)


# ------------------------------------------------------------------------------ hand-computed cases

QRELS = {"q1": {"a": 3, "b": 0, "c": 1, "d": 2, "z": 1}, "q2": {"x": 1}, "q3": {"y": 0}}
RUN = {
    "q1": {"a": 0.5, "b": 0.9, "c": 0.5, "e": 0.1, "d": 0.05},  # order b, c, a (tie: c > a), e, d
    "q3": {"y": 1.0},
    "q9": {"x": 1.0},  # not judged: ignored
}


def test_hand_computed_ranking_with_ties() -> None:
    res = evaluate(QRELS, RUN, ["P@2", "RR", "RR(rel=2)", "AP", "AP(rel=2)", "R@3", "nDCG@3", "nDCG",
                                "nDCG(dcg='exp-log2')@3", "DCG@3", "Judged@4", "Judged@10", "AP@3"])
    assert set(res["AP"]) == {"q1", "q3"}  # q2 absent from the run, q9 absent from the qrels
    # q1 grades in ranked order: b=0, c=1, a=3, e=unjudged, d=2; relevant (rel>=1): c, a, d, z
    assert res["P@2"]["q1"] == 0.5
    assert res["RR"]["q1"] == 0.5 and res["RR(rel=2)"]["q1"] == pytest.approx(1 / 3)
    assert res["AP"]["q1"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 4)
    assert res["AP@3"]["q1"] == pytest.approx((1 / 2 + 2 / 3) / 4)
    assert res["AP(rel=2)"]["q1"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert res["R@3"]["q1"] == 0.5
    dcg3 = 1 / math.log2(3) + 3 / math.log2(4)
    idcg3 = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert res["DCG@3"]["q1"] == pytest.approx(dcg3)
    assert res["nDCG@3"]["q1"] == pytest.approx(dcg3 / idcg3)
    full = dcg3 + 2 / math.log2(6)
    ideal = idcg3 + 1 / math.log2(5)
    assert res["nDCG"]["q1"] == pytest.approx(full / ideal)
    burges = (1 / math.log2(3) + 7 / math.log2(4)) / (7 + 3 / math.log2(3) + 1 / math.log2(4))
    assert res["nDCG(dcg='exp-log2')@3"]["q1"] == pytest.approx(burges)
    assert res["Judged@4"]["q1"] == 0.75 and res["Judged@10"]["q1"] == 0.8
    # q3 has judgments but no relevant document: every measure is 0, Judged is 1
    assert all(res[m]["q3"] == 0.0 for m in res if not m.startswith("Judged"))
    assert res["Judged@10"]["q3"] == 1.0


def test_complete_counts_missing_queries_as_zero() -> None:
    res = evaluate(QRELS, RUN, ["AP", "nDCG@10"], complete=True)
    assert set(res["AP"]) == {"q1", "q2", "q3"} and res["AP"]["q2"] == 0.0
    assert mean_scores(res)["AP"] == pytest.approx(sum(res["AP"].values()) / 3)


def test_evaluator_reuses_qrels_across_runs() -> None:
    ev = Evaluator(QRELS, ["RR"])
    assert ev.evaluate(RUN) == evaluate(QRELS, RUN, ["RR"])
    assert ev.evaluate({"q2": {"x": 0.0}}) == {"RR": {"q2": 1.0}}
    assert ev.evaluate({}) == {"RR": {}}
    assert math.isnan(mean({}))


def test_random_runs_match_pytrec_eval() -> None:
    """Many ties (rounded scores) and docids of different lengths exercise the trec_eval order."""
    rng = np.random.default_rng(7)
    qrels = {f"q{q}": {f"d{d}": int(rng.integers(0, 4)) for d in rng.choice(300, 40, replace=False)} for q in range(30)}
    run = {f"q{q}": {f"d{d}": float(np.round(rng.random(), 1)) for d in rng.choice(300, 120, replace=False)} for q in range(35)}
    names = {"map": "AP", "recip_rank": "RR", "P_5": "P@5", "ndcg_cut_10": "nDCG@10", "recall_20": "R@20", "map_cut_20": "AP@20"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, set(names)).evaluate(run)
    ours = evaluate(qrels, run, list(names.values()))
    for te_name, name in names.items():
        assert ours[name] == pytest.approx({q: v[te_name] for q, v in reference.items()}, abs=1e-12)


# -------------------------------------------------------------------------------------- measure names


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("nDCG@10", NDCG(10), "nDCG@10"),
        ("NDCG@10", NDCG(10), "nDCG@10"),
        ("RR(rel=2)@10", RR(10, rel=2), "RR(rel=2)@10"),
        ("RR", RR(), "RR"),
        ("MRR@10", RR(10), "RR@10"),
        ("R@100", Recall(100), "R@100"),
        ("AP", AP(), "AP"),
        ("AP(rel=2)@100", AP(100, rel=2), "AP(rel=2)@100"),
        ("P@10", Precision(10), "P@10"),
        ("Judged@10", Judged(10), "Judged@10"),
        ("DCG@10", DCG(10), "DCG@10"),
        ("nDCG(dcg='exp-log2')@10", NDCG(10, dcg="exp-log2"), "nDCG(dcg='exp-log2')@10"),
        ("nDCG(dcg=exp-log2)@10", NDCG(10, dcg="exp-log2"), "nDCG(dcg='exp-log2')@10"),
    ],
)
def test_parse_measure(text: str, expected: Measure, canonical: str) -> None:
    assert parse_measure(text) == expected
    assert str(parse_measure(text)) == canonical
    assert parse_measure(canonical) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nDGC@10", "unknown measure"),
        ("P", "needs a cutoff"),
        ("R(rel=2)", "needs a cutoff"),
        ("nDCG(rel=2)@10", "no 'rel' parameter"),
        ("AP(dcg='exp-log2')", "no 'dcg' parameter"),
        ("nDCG(dcg='exp')@10", "dcg must be one of"),
        ("RR(rel=two)", "rel must be an integer"),
        ("RR(foo=1)", "bad parameter"),
        ("P@0", "positive integer"),
        ("nDCG@ten", "cannot parse"),
    ],
)
def test_parse_measure_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_measure(text)


def test_fractional_grades_such_as_expected_llm_labels() -> None:
    qrels = {"q": {"a": 1.5, "b": 0.5, "c": 0.0}}
    res = evaluate(qrels, {"q": {"b": 2.0, "a": 1.0, "x": 0.5}}, ["nDCG@2", "RR", "AP", "Judged@3"])
    assert res["nDCG@2"]["q"] == pytest.approx((0.5 + 1.5 / math.log2(3)) / (1.5 + 0.5 / math.log2(3)))
    assert res["RR"]["q"] == 0.5 and res["AP"]["q"] == 0.5  # only a (1.5) reaches rel=1
    assert res["Judged@3"]["q"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------- measure families


def test_every_family_round_trips_its_name_and_describes_itself() -> None:
    from rankline.evaluation.measures import FAMILIES

    assert list(FAMILIES) == ["nDCG", "DCG", "RR", "R", "P", "AP", "Judged"]
    for name, family in FAMILIES.items():
        assert family.description and "\n" not in family.description
        plain = parse_measure(f"{name}@5")
        assert type(plain) is family and str(plain) == f"{name}@5"
        for param in family.parameters():
            assert param.metadata["help"]


def test_a_new_family_is_one_registered_class(monkeypatch) -> None:
    """A family defined in one place is parsed, printed and evaluated like the built-in ones."""
    from dataclasses import dataclass, field

    from rankline.evaluation import measures

    monkeypatch.setattr(measures, "FAMILIES", dict(measures.FAMILIES))
    monkeypatch.setattr(measures, "_ALIASES", dict(measures._ALIASES))

    @measures.register
    @dataclass(frozen=True)
    class NumRet(measures.Measure):
        name = "NumRet"
        description = "retrieved documents with at least `rel` (unjudged count when rel is absent)"
        rel: int = field(default=-1, metadata={"help": "lowest grade counted"})

        def values(self, run, ideal):
            top = run.head(self.cutoff)
            return top.per_query_sum(top.grades >= self.rel) if self.rel >= 0 else top.sizes.astype(float)

    measure = parse_measure("NumRet(rel=1)@3")
    assert measure == NumRet(3, rel=1) and str(measure) == "NumRet(rel=1)@3"
    res = evaluate(QRELS, RUN, ["NumRet@3", "NumRet(rel=1)@3", "NumRet"])
    assert res["NumRet@3"]["q1"] == 3 and res["NumRet(rel=1)@3"]["q1"] == 2 and res["NumRet"]["q1"] == 5
