"""An evaluation report people can look at: one self-contained HTML page (inline SVG plots, inline
style, no external asset) from `rankline eval`'s JSON report.

    html = report_html(report, alpha=0.05)

The page holds the comparison table with significance markers (as eval's text table), the paired
test of each run against the baseline, a per-query difference plot of each run against the baseline
(the first run) for each measure and, when the report has intervals (``--ci``), a forest plot per
measure of the LLM-only point, the human-only interval and the requested method's interval of each
run, with the same numbers as a table. Every number shown carries its exact value in ``data-value``
(with ``data-run``, ``data-measure`` and ``data-field`` saying which JSON entry it is), so the page
can be checked against the JSON output.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Mapping, Sequence

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1f2328; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #d0d7de; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
.sig { font-weight: 600; }
.note { color: #57606a; font-size: .9rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; width: min-content; }
figcaption { font-size: .9rem; margin-bottom: .25rem; }
svg text { font: 11px system-ui, sans-serif; fill: #1f2328; }
"""
TEST_NAMES = {"t": "paired t-test", "randomization": "randomization test"}
BETTER, WORSE, AXIS, HUMAN, METHOD, LLM = "#2f9e44", "#e03131", "#57606a", "#868e96", "#1c7ed6", "#f08c00"


def report_html(report: Mapping[str, Any], *, alpha: float, title: str = "rankline evaluation report") -> str:
    """The page for `report` (eval's JSON schema, ``ci`` and ``ci_references`` included when present);
    `alpha` is the level of the significance markers."""
    runs, measures = report["runs"], report["measures"]
    names = list(runs)
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="note">{len(names)} runs, baseline <b>{escape(report["baseline"])}</b>; '
            f"measures {escape(', '.join(measures))}.</p>",
            "<h2>Comparison</h2>", _comparison_table(report, alpha)]
    if len(names) > 1 and report["test"] != "none":
        body += ["<h2>Against the baseline</h2>", _significance_table(report)]
    if len(names) > 1:
        body += ["<h2>Per-query differences</h2>",
                 f'<p class="note">Each bar is one query: the run\'s value minus {escape(report["baseline"])}\'s, '
                 "sorted; green above zero, red below.</p>", '<div class="plots">']
        body += [_difference_figure(runs[name]["per_query"], runs[names[0]]["per_query"], name, names[0], m)
                 for name in names[1:] for m in measures]
        body.append("</div>")
    if all("ci" in runs[name] for name in names):
        body += _ci_section(report, alpha)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{escape(title)}</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------ tables


def _cell(value: float, run: str, measure: str, field: str, text: str | None = None, cls: str = "num") -> str:
    """A table cell showing `value` (4 decimals unless `text`), its exact value in data-value."""
    shown = f"{value:.4f}" if text is None else text
    return (f'<td class="{cls}" data-run="{escape(run)}" data-measure="{escape(measure)}" data-field="{field}" '
            f'data-value="{value!r}">{shown}</td>')


def _comparison_table(report: Mapping[str, Any], alpha: float) -> str:
    measures = report["measures"]
    rows = ["<table>", "<thead><tr><th>run</th><th>queries</th>"
            + "".join(f"<th>{escape(m)}</th>" for m in measures) + "</tr></thead><tbody>"]
    for name, entry in report["runs"].items():
        cells = []
        for m in measures:
            significant = entry.get("significance", {}).get(m, {}).get("p_holm", 1.0) < alpha
            value = entry["mean"][m]
            cells.append(_cell(value, name, m, "mean", f"{value:.4f}" + ("*" if significant else ""),
                               "num sig" if significant else "num"))
        rows.append(f'<tr><td class="text">{escape(name)}</td><td class="num">{len(entry["per_query"])}</td>'
                    + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    if report["test"] != "none" and len(report["runs"]) > 1:
        rows.append(f'<p class="note">* p &lt; {alpha:g} against {escape(report["baseline"])} '
                    f'({TEST_NAMES[report["test"]]}, Holm-corrected over {len(report["runs"]) - 1} runs)</p>')
    return "\n".join(rows)


def _significance_table(report: Mapping[str, Any]) -> str:
    rows = ["<table>", '<thead><tr><th>run</th><th class="text">measure</th><th>mean difference</th><th>p</th>'
            "<th>p (Holm)</th><th>queries</th></tr></thead><tbody>"]
    for name, entry in report["runs"].items():
        for m, sig in entry.get("significance", {}).items():
            rows.append(f'<tr><td class="text">{escape(name)}</td><td class="text">{escape(m)}</td>'
                        + _cell(sig["mean_difference"], name, m, "mean_difference", f"{sig['mean_difference']:+.4f}")
                        + _cell(sig["p_value"], name, m, "p_value", f"{sig['p_value']:.4g}")
                        + _cell(sig["p_holm"], name, m, "p_holm", f"{sig['p_holm']:.4g}")
                        + f'<td class="num">{sig["n_queries"]}</td></tr>')
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _ci_section(report: Mapping[str, Any], alpha: float) -> list[str]:
    runs, measures = report["runs"], report["measures"]
    first = next(iter(runs.values()))["ci"][measures[0]]
    method, level = first["method"], f"{100 * (1 - alpha):g}%"
    over = (f"the mean over all {first['n_total']} queries" if first["estimand"] == "all"
            else f"the mean over the {first['n_total'] - first['n_labelled']} queries without human labels")
    out = ["<h2>Confidence intervals</h2>",
           f'<p class="note">{level} intervals for {over}, {first["n_labelled"]} queries with human labels: '
           f"LLM labels alone (point), human labels alone (t interval) and {escape(method)}.</p>",
           '<div class="plots">']
    out += [_forest_figure(runs, m, method) for m in measures]
    out.append("</div>")
    rows = ["<table>", f'<thead><tr><th>run</th><th class="text">measure</th><th>LLM only</th><th>human lower</th>'
            f"<th>human upper</th><th>{escape(method)}</th><th>lower</th><th>upper</th></tr></thead><tbody>"]
    for name, entry in runs.items():
        for m in measures:
            ref, ci = entry["ci_references"][m], entry["ci"][m]
            rows.append(f'<tr><td class="text">{escape(name)}</td><td class="text">{escape(m)}</td>'
                        + _cell(ref["llm_only"], name, m, "llm_only")
                        + _cell(ref["human"]["lower"], name, m, "human_lower")
                        + _cell(ref["human"]["upper"], name, m, "human_upper")
                        + _cell(ci["estimate"], name, m, "ci_estimate")
                        + _cell(ci["lower"], name, m, "ci_lower")
                        + _cell(ci["upper"], name, m, "ci_upper") + "</tr>")
    rows.append("</tbody></table>")
    return out + ["\n".join(rows)]


# ------------------------------------------------------------------------------------------- plots


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 5, 10) if s * magnitude >= raw)
    return [i * step for i in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1)]


def _svg(width: int, height: int, label: str, parts: Sequence[str]) -> str:
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">' + "".join(parts) + "</svg>")


def _difference_figure(run_values: Mapping[str, Mapping[str, float]], base_values: Mapping[str, Mapping[str, float]],
                       run: str, baseline: str, measure: str) -> str:
    """Bars of run - baseline per common query, sorted from the largest gain to the largest loss."""
    diffs = sorted((run_values[q][measure] - base_values[q][measure] for q in run_values.keys() & base_values.keys()),
                   reverse=True)
    width, height, left, top, bottom = 460, 200, 46, 8, 12
    span = max((abs(d) for d in diffs), default=0.0) or 1.0
    plot_w, plot_h = width - left - 8, height - top - bottom

    def y(value: float) -> float:
        return top + plot_h / 2 - value / span * plot_h / 2

    parts = []
    for tick in _ticks(-span, span):
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="{"#adb5bd" if tick == 0 else "#eceff1"}"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{f"{tick:+.3g}" if tick else "0"}</text>')
    bar = plot_w / max(len(diffs), 1)
    for i, d in enumerate(diffs):
        if d:
            y0, y1 = sorted((y(0.0), y(d)))
            parts.append(f'<rect x="{left + i * bar:.2f}" y="{y0:.1f}" width="{max(bar * 0.85, 0.6):.2f}" '
                         f'height="{max(y1 - y0, 0.5):.1f}" fill="{BETTER if d > 0 else WORSE}"/>')
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    caption = (f"{escape(run)} − {escape(baseline)}, {escape(measure)}: {wins} better, {losses} worse, "
               f"{len(diffs) - wins - losses} tied of {len(diffs)} queries; mean difference {mean:+.4f}")
    return f"<figure><figcaption>{caption}</figcaption>{_svg(width, height, caption, parts)}</figure>"


def _forest_figure(runs: Mapping[str, Mapping[str, Any]], measure: str, method: str) -> str:
    """Per run three rows: LLM-only point, human-only interval, the method's interval (with its estimate)."""
    rows = []
    for name, entry in runs.items():
        ref, ci = entry["ci_references"][measure], entry["ci"][measure]
        rows.append((name, ref["llm_only"], ref["human"], ci))
    values = [v for _, llm, h, c in rows for v in (llm, h["lower"], h["upper"], c["lower"], c["upper"])]
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or 0.01
    low, high = low - pad, high + pad
    label_w, width, row_h, top = 150, 500, 16, 26
    height = top + len(rows) * (3 * row_h + 10) + 22
    plot_w = width - label_w - 14

    def x(value: float) -> float:
        return label_w + (value - low) / (high - low) * plot_w

    parts = []
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 4}" y2="{height - 20}" stroke="#eceff1"/>'
                     f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle">{tick:.3g}</text>')
    legend = [("LLM only", LLM), ("human only", HUMAN), (method, METHOD)]
    for i, (text, colour) in enumerate(legend):
        parts.append(f'<rect x="{label_w + i * 120}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{label_w + i * 120 + 14}" y="15">{escape(text)}</text>')
    for r, (name, llm, human, ci) in enumerate(rows):
        base = top + r * (3 * row_h + 10)
        short = name if len(name) <= 26 else name[:25] + "…"
        parts.append(f'<text x="4" y="{base + 1.5 * row_h + 4}">{escape(short)}</text>')
        yl, yh, ym = base + row_h / 2, base + 1.5 * row_h, base + 2.5 * row_h
        parts.append(f'<path d="M{x(llm):.1f} {yl - 5} l5 5 l-5 5 l-5 -5 z" fill="{LLM}"/>')
        for yy, interval, colour in ((yh, human, HUMAN), (ym, ci, METHOD)):
            parts.append(f'<line x1="{x(interval["lower"]):.1f}" x2="{x(interval["upper"]):.1f}" y1="{yy}" y2="{yy}" '
                         f'stroke="{colour}" stroke-width="3"/>'
                         f'<circle cx="{x(interval["estimate"]):.1f}" cy="{yy}" r="4" fill="{colour}"/>')
    caption = f"{escape(measure)}: intervals per run"
    return f"<figure><figcaption>{caption}</figcaption>{_svg(width, height, caption, parts)}</figure>"
