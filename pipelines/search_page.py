"""The search page `rankline serve` answers GET / with (a placeholder until the page lands)."""
from __future__ import annotations

import html


def search_page(*, max_k: int, default_k: int, has_reranker: bool) -> str:
    """One self-contained HTML page for the search endpoint."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>rankline search</title></head>"
            f"<body><h1>rankline search</h1><p>POST /search with k from 1 to {html.escape(str(max_k))} "
            f"(default {html.escape(str(default_k))}); reranker: {'yes' if has_reranker else 'no'}. "
            '<a href="docs">API</a></p></body></html>')
