"""The search page in a real browser: headless Chromium opens `rankline serve`'s GET / on the toy
stages, a query is typed and submitted from the keyboard, and the page shows what POST /search
returns (docids, ranks, first-stage ranks, in order), the per-stage timings and the server's error
details; the API key typed into the page is sent as a bearer token."""
from __future__ import annotations

import socket

import pytest

from rankline.pipelines.config import load_config
from rankline.pipelines.search_page import search_page

KEY = "page-test-key"


@pytest.fixture(scope="module")
def page(ray_session, toy, tmp_path_factory):
    """The toy pipeline served with an API key (as test_serve.py's endpoint, under another app name
    and port); yields the page's URL and an httpx client that sends the key."""
    from ray import serve

    from rankline.pipelines.serve_app import build_app

    tmp = tmp_path_factory.mktemp("search-page")
    (tmp / "keys.txt").write_text(KEY + "\n")
    (tmp / "toy.yaml").write_text(f"""
retriever: {{factory: "{toy.__name__}:KeywordRetriever", k: 2}}
reranker: {{factory: "{toy.__name__}:ShortestFirstReranker", depth: 3}}
serve: {{max_k: 5, max_query_chars: 40, api_keys_file: keys.txt}}
""")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(load_config(tmp / "toy.yaml")), name="toy-page", route_prefix="/")
    import httpx

    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield base + "/", client
    serve.shutdown()


def _submit(browser, query: str, k: int | None = None, key: str | None = None) -> str:
    """Type the query (and k, the key) from the keyboard, press Enter, wait for the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if k is not None:
        field = browser.find_element(By.ID, "k")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(k))
    if key is not None:
        browser.find_element(By.ID, "api-key").send_keys(key)
    field = browser.find_element(By.ID, "query")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(query, Keys.ENTER)
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 60).until(lambda _: status.text and status.text != "Searching\u2026")
    return status.text


def _shown(browser) -> list[tuple[str, int, int, str, str]]:
    from selenium.webdriver.common.by import By

    return [(hit.get_attribute("data-docid"),
             int(hit.find_element(By.CSS_SELECTOR, "[data-rank]").get_attribute("data-rank")),
             int(hit.find_element(By.CSS_SELECTOR, "[data-first-stage-rank]").get_attribute("data-first-stage-rank")),
             hit.find_element(By.CSS_SELECTOR, ".title").text, hit.find_element(By.CSS_SELECTOR, ".text").text)
            for hit in browser.find_elements(By.CSS_SELECTOR, "li.hit")]


def _expected(client, body: dict) -> tuple[list[tuple[str, int, int, str, str]], dict]:
    answer = client.post("/search", json=body)
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    return [(h["docid"], h["rank"], h["first_stage_rank"], h["title"] or h["docid"], h["text"]) for h in hits], \
        answer.json()["timings_ms"]


@pytest.mark.ray
@pytest.mark.browser
def test_the_page_shows_what_post_search_returns(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, client = page
    browser.get(url)
    assert browser.title == "rankline search"
    assert browser.switch_to.active_element.get_attribute("id") == "query"  # typing starts at once
    assert browser.find_element(By.ID, "k").get_attribute("value") == "5"  # default_k = min(10, max_k)

    # Without the key the server's 401 detail is shown; with it typed into the page, the hits.
    assert _submit(browser, "documents query ranks") == \
        "Error 401: this service needs an API key: send Authorization: Bearer KEY"
    status = _submit(browser, "documents query ranks", k=3, key=KEY)
    want, timings = _expected(client, {"query": "documents query ranks", "k": 3, "rerank": True})
    # Hand-worked in test_serve.py: the retriever's d6, d3, d4 reranked shortest first.
    assert [(docid, rank, first) for docid, rank, first, *_ in want] == [("d4", 1, 3), ("d6", 2, 1), ("d3", 3, 2)]
    assert _shown(browser) == want and status.startswith("3 hits in ")
    stages = [s.get_attribute("data-stage") for s in browser.find_elements(By.CSS_SELECTOR, "#timings .timing")]
    assert stages == list(timings) and set(stages) == {"retrieve", "rerank", "total"}

    # The rerank toggle from the keyboard (Tab to it, Space): the first stage's order, no rerank timing.
    browser.find_element(By.ID, "k").click()
    browser.switch_to.active_element.send_keys(Keys.TAB, Keys.SPACE)
    assert browser.switch_to.active_element.get_attribute("id") == "rerank"
    assert not browser.find_element(By.ID, "rerank").is_selected()
    _submit(browser, "documents query ranks")
    want, timings = _expected(client, {"query": "documents query ranks", "k": 3, "rerank": False})
    assert _shown(browser) == want and [rank for _, rank, first, *_ in want] == [first for _, _, first, *_ in want]
    assert "rerank" not in timings and "rerank" not in browser.find_element(By.ID, "timings").text

    # A request the server refuses: its detail, and no stale hits.
    long_query = "x" * 41
    assert client.post("/search", json={"query": long_query, "k": 3}).json()["detail"] == \
        "query is 41 characters long; the limit is 40"
    assert _submit(browser, long_query) == "Error 422: query is 41 characters long; the limit is 40"
    assert _shown(browser) == []
    assert browser.find_element(By.ID, "status").get_attribute("aria-live") == "polite"


def test_the_page_is_self_contained_and_has_no_toggle_without_a_reranker():
    html = search_page(max_k=50, default_k=10, has_reranker=False)
    assert 'max="50"' in html and 'value="10"' in html and 'id="rerank"' not in html
    assert 'id="rerank"' in search_page(max_k=50, default_k=10, has_reranker=True)
    for external in ("src=", "href=", "url(", "@import", "<link"):
        assert external not in html.lower()
    with pytest.raises(ValueError, match="default_k must be between 1 and max_k=5, got 6"):
        search_page(max_k=5, default_k=6, has_reranker=True)
