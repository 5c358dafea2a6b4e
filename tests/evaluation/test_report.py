"""`rankline eval --report`: the page's numbers are the JSON output's, it holds no external asset, the
option is refused before any work, and (browser) the page renders in Chromium with plots that are
not empty."""
from __future__ import annotations

import io
import json
from html.parser import HTMLParser

import pytest

from rankline.pipelines.cli import main

RUNS = ("candidates/BM25.trec", "candidates/D_BERT_KD_TASB.trec", "runs/ICT-BERT2")
MEASURES = ("nDCG@10", "DCG@10")


class _Cells(HTMLParser):
    """Every element carrying data-value: (run, measure, field) -> (exact value, shown text)."""

    def __init__(self):
        super().__init__()
        self.cells: dict[tuple[str, str, str], tuple[float, str]] = {}
        self.svgs = 0
        self._open: tuple[str, str, str, float] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.svgs += tag == "svg"
        if "data-value" in attrs:
            self._open = (attrs["data-run"], attrs["data-measure"], attrs["data-field"], float(attrs["data-value"]))

    def handle_data(self, data):
        if self._open:
            *key, value = self._open
            assert tuple(key) not in self.cells, f"{key} shown twice"
            self.cells[tuple(key)] = (value, data)
            self._open = None


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory):
    """eval --ci ppi-all on three DL 2019 runs: the JSON (--out) and the page (--report) of one call."""
    tmp = tmp_path_factory.mktemp("report")
    base = data_dir / "trec-dl-2019"
    code = main([str(a) for a in [
        "eval", base / "qrels.dl19-passage.txt", *(base / r for r in RUNS), "-m", *MEASURES,
        "--llm-labels", data_dir / "llm-labels" / "dl2019" / "dl2019_test_4prompts_llama70b.txt",
        "--ci", "ppi-all", "--labelled", "10", "--seed", "0",
        "--format", "json", "--out", tmp / "report.json", "--report", tmp / "report.html",
    ]])
    assert code == 0
    return json.loads((tmp / "report.json").read_text()), tmp / "report.html"


def _expected(report) -> dict[tuple[str, str, str], tuple[float, str]]:
    """What the page must show for the JSON report: every number, exactly, and its text."""
    want = {}
    for name, entry in report["runs"].items():
        for m in report["measures"]:
            sig = entry.get("significance", {}).get(m)
            star = "*" if sig and sig["p_holm"] < 0.05 else ""
            want[name, m, "mean"] = (entry["mean"][m], f"{entry['mean'][m]:.4f}{star}")
            if sig:
                want[name, m, "mean_difference"] = (sig["mean_difference"], f"{sig['mean_difference']:+.4f}")
                want[name, m, "p_value"] = (sig["p_value"], f"{sig['p_value']:.4g}")
                want[name, m, "p_holm"] = (sig["p_holm"], f"{sig['p_holm']:.4g}")
            ref, ci = entry["ci_references"][m], entry["ci"][m]
            for field, value in [("llm_only", ref["llm_only"]), ("human_lower", ref["human"]["lower"]),
                                 ("human_upper", ref["human"]["upper"]), ("ci_estimate", ci["estimate"]),
                                 ("ci_lower", ci["lower"]), ("ci_upper", ci["upper"])]:
                want[name, m, field] = (value, f"{value:.4f}")
    return want


def test_numbers_in_the_page_equal_the_json_output(report):
    data, page = report
    html = page.read_text()
    cells = _Cells()
    cells.feed(html)
    assert cells.cells == _expected(data)
    # two runs against the baseline x two measures of per-query differences, one forest plot per measure
    assert cells.svgs == 2 * len(MEASURES) + len(MEASURES)
    assert "0.6650*" in html and "0.7210*" in html  # published DL 2019 nDCG@10 of ICT-BERT2 and TAS-B, significant


def test_the_page_is_self_contained(report):
    html = report[1].read_text().lower()
    for external in ("src=", "href=", "url(", "@import", "<script", "<link"):
        assert external not in html


def test_the_ci_references_are_the_human_interval_and_the_llm_mean(data_dir, report):
    """Oracles: the human-only interval is --ci human's interval; the LLM-only point is the mean of
    the run's per-query values with the LLM labels as qrels."""
    from rankline.evaluation.metrics import evaluate
    from rankline.formats import read_qrels, read_run

    data, _ = report
    llm = read_qrels(data_dir / "llm-labels" / "dl2019" / "dl2019_test_4prompts_llama70b.txt")
    run = read_run(data_dir / "trec-dl-2019" / RUNS[2])
    values = evaluate(llm, run, ["nDCG@10"], complete=True)["nDCG@10"]
    entry = data["runs"]["ICT-BERT2"]
    assert entry["ci_references"]["nDCG@10"]["llm_only"] == pytest.approx(sum(values.values()) / len(values))
    assert len(values) == entry["ci"]["nDCG@10"]["n_total"]
    base = data_dir / "trec-dl-2019"
    code = main([str(a) for a in [
        "eval", base / "qrels.dl19-passage.txt", *(base / r for r in RUNS), "-m", *MEASURES,
        "--llm-labels", data_dir / "llm-labels" / "dl2019" / "dl2019_test_4prompts_llama70b.txt",
        "--ci", "human", "--labelled", "10", "--seed", "0", "--format", "json", "--out", report[1].with_name("h.json"),
    ]])
    assert code == 0
    human = json.loads(report[1].with_name("h.json").read_text())
    for name in data["runs"]:
        for m in MEASURES:
            assert data["runs"][name]["ci_references"][m]["human"] == human["runs"][name]["ci"][m]


@pytest.mark.parametrize("argv, message", [
    (["--report", "{tmp}"], "is a folder"),
    (["--report", "{tmp}/report.txt"], "expected a file name ending in .html"),
    (["--report", "{tmp}/same.html", "--out", "{tmp}/same.html"], "is also --out"),
    (["--report", "{tmp}/r.html", "--alpha", "2"], "--alpha"),
])
def test_report_option_is_checked_before_any_work(tmp_path, capsys, argv, message):
    """One line on stderr, exit 2, and nothing written, although the qrels and run do not even exist."""
    code = main(["eval", str(tmp_path / "missing.qrels"), str(tmp_path / "missing.run"),
                 *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_failed_eval_leaves_no_report(tmp_path, capsys):
    (tmp_path / "q.qrels").write_text("q1 0 d1 1\n")
    (tmp_path / "r.run").write_text("q1 Q0 d1 1 oops tag\n")
    code = main(["eval", str(tmp_path / "q.qrels"), str(tmp_path / "r.run"), "--report", str(tmp_path / "r.html")])
    assert code == 2 and "r.run" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _coloured_fraction(png: bytes) -> float:
    """The share of pixels in colour: the plots' marks (bars, intervals, points); the background, grid,
    axes and text are white or grey."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float((np.ptp(pixels, axis=2) > 60).mean())


@pytest.mark.browser
def test_the_page_renders_in_chromium_with_plots_that_are_not_empty(browser, report):
    from selenium.webdriver.common.by import By

    data, page = report
    browser.get(page.as_uri())
    assert browser.title == "rankline evaluation report"
    plots = browser.find_elements(By.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 3 * len(MEASURES)
    for plot in plots:
        assert plot.size["width"] > 300 and plot.size["height"] > 100
        browser.execute_script("arguments[0].scrollIntoView()", plot)
        assert _coloured_fraction(plot.screenshot_as_png) > 0.01, plot.get_attribute("aria-label")
    shown = {(c.get_attribute("data-run"), c.get_attribute("data-measure"), c.get_attribute("data-field")): c.text
             for c in browser.find_elements(By.CSS_SELECTOR, "[data-value]")}
    assert shown == {key: text for key, (_, text) in _expected(data).items()}
