"""The search page `rankline serve` answers GET / with: one self-contained HTML page (inline style and
script, no external asset, so it works offline) for the service's `POST /search`.

A query box, k and a rerank toggle (only where the pipeline has a reranker), and an optional API key
that stays in the page's memory and goes out as `Authorization: Bearer KEY`. The page POSTs
{query, k, rerank} as JSON to `search` (relative, so it works under any route prefix) and lists the
hits with title and text, each one's final rank beside its first-stage rank, and the per-stage
timings; an error shows the server's `detail`. Usable from the keyboard: labelled inputs, Enter
submits, a visible focus ring, and the outcome is announced through an aria-live status line.
"""
from __future__ import annotations

from string import Template

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rankline search</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; color: #1f2328; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
form { display: flex; flex-wrap: wrap; gap: .75rem 1rem; align-items: end; }
label { display: flex; flex-direction: column; font-size: .85rem; color: #57606a; }
label.inline { flex-direction: row; align-items: center; gap: .35rem; font-size: 1rem; color: inherit; }
input, button { font: inherit; padding: .4rem .6rem; border: 1px solid #8c959f; border-radius: 6px; }
#query { width: 24rem; max-width: 80vw; } #k { width: 5rem; } #api-key { width: 14rem; }
button { background: #1f6feb; color: #fff; border-color: #1f6feb; cursor: pointer; }
:focus-visible { outline: 3px solid #fb8500; outline-offset: 2px; }
#status { min-height: 1.5rem; margin: 1rem 0 .25rem; }
#status.error { color: #b42318; font-weight: 600; }
#timings { font-size: .85rem; color: #57606a; margin: 0 0 1rem; }
#timings span + span::before { content: " · "; }
ol#hits { list-style: none; padding: 0; margin: 0; }
li.hit { border-top: 1px solid #d0d7de; padding: .75rem 0; }
li.hit h2 { font-size: 1.05rem; margin: 0 0 .2rem; }
.ranks { font-size: .85rem; color: #57606a; font-variant-numeric: tabular-nums; }
.rank { display: inline-block; min-width: 2.2rem; font-weight: 700; color: #1f2328; }
.moved-up { color: #1a7f37; } .moved-down { color: #b42318; }
.text { margin: .25rem 0 0; }
</style>
</head>
<body>
<main>
<h1>rankline search</h1>
<form id="search-form" role="search">
  <label for="query">Query
    <input id="query" name="query" type="search" required autofocus autocomplete="off"></label>
  <label for="k">Hits (k)
    <input id="k" name="k" type="number" min="1" max="$max_k" value="$default_k" required></label>
  $rerank_toggle
  <label for="api-key">API key (optional, kept in this page only)
    <input id="api-key" name="api-key" type="password" autocomplete="off"></label>
  <button type="submit">Search</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<p id="timings"></p>
<ol id="hits" aria-label="hits"></ol>
</main>
<script>
"use strict";
(function () {
  var form = document.getElementById("search-form");
  var statusLine = document.getElementById("status");
  var timingsLine = document.getElementById("timings");
  var list = document.getElementById("hits");
  var rerankBox = document.getElementById("rerank");

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.className = isError ? "error" : "";
  }

  function showHit(hit) {
    var item = element("li", "hit");
    item.dataset.docid = hit.docid;
    item.appendChild(element("h2", "title", hit.title || hit.docid));
    var ranks = element("div", "ranks");
    var rank = element("span", "rank", "#" + hit.rank);
    rank.dataset.rank = hit.rank;
    ranks.appendChild(rank);
    var moved = hit.first_stage_rank - hit.rank;
    var first = element("span", moved > 0 ? "moved-up" : moved < 0 ? "moved-down" : "",
      "first stage #" + hit.first_stage_rank + (moved > 0 ? " (\\u2191" + moved + ")" : moved < 0 ? " (\\u2193" + (-moved) + ")" : ""));
    first.dataset.firstStageRank = hit.first_stage_rank;
    ranks.appendChild(first);
    ranks.appendChild(document.createTextNode(" \\u00b7 " + hit.docid + " \\u00b7 score " + Number(hit.score).toPrecision(4)));
    item.appendChild(ranks);
    item.appendChild(element("p", "text", hit.text));
    list.appendChild(item);
  }

  function showTimings(timings) {
    timingsLine.textContent = "";
    Object.keys(timings).forEach(function (stage) {
      var part = element("span", "timing", stage + " " + timings[stage].toFixed(1) + " ms");
      part.dataset.stage = stage;
      timingsLine.appendChild(part);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = {query: document.getElementById("query").value, k: Number(document.getElementById("k").value),
                rerank: rerankBox ? rerankBox.checked : false};
    var headers = {"Content-Type": "application/json"};
    var key = document.getElementById("api-key").value;
    if (key) headers["Authorization"] = "Bearer " + key;
    say("Searching\\u2026", false);
    fetch("search", {method: "POST", headers: headers, body: JSON.stringify(body)})
      .then(function (response) {
        return response.json().catch(function () { return {detail: response.statusText}; })
          .then(function (data) { return {ok: response.ok, status: response.status, data: data}; });
      })
      .then(function (answer) {
        list.textContent = "";
        timingsLine.textContent = "";
        if (!answer.ok) {
          var detail = answer.data.detail;
          say("Error " + answer.status + ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)), true);
          return;
        }
        answer.data.hits.forEach(showHit);
        showTimings(answer.data.timings_ms);
        var n = answer.data.hits.length;
        say(n + (n === 1 ? " hit" : " hits") + " in " + answer.data.timings_ms.total.toFixed(1) + " ms", false);
      })
      .catch(function (error) { say("Error: the service did not answer (" + error.message + ")", true); });
  });
})();
</script>
</body>
</html>
""")

_RERANK_TOGGLE = """<label class="inline" for="rerank"><input id="rerank" name="rerank" type="checkbox" checked>
    Rerank</label>"""


def search_page(*, max_k: int, default_k: int, has_reranker: bool) -> str:
    """The page for a service answering k from 1 to `max_k` (the form starts at `default_k`); the
    rerank toggle is there only when `has_reranker`."""
    if not 1 <= default_k <= max_k:
        raise ValueError(f"search page: default_k must be between 1 and max_k={max_k}, got {default_k}")
    return _PAGE.substitute(max_k=int(max_k), default_k=int(default_k),
                            rerank_toggle=_RERANK_TOGGLE if has_reranker else "")
