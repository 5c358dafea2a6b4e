"""The README's screenshots, from real data: the report pages `make demo` writes and the search page
of `rankline serve` on SciFact (BM25 top 20 reranked by FIRST with the embedded SmolLM2).

    make demo                                   # out/demo/report.html, report-ci.html, scifact-index
    .venv/bin/python docs/screenshots.py [--demo out/demo] [--out docs] [--port 8765]

Writes docs/report.png, docs/report-ci.png and docs/search-page.png (palette PNGs, well under 300 KB).
Chromium comes from Debian's packages, as for the browser tests (tests/browser.py).
"""
from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser import start_chromium  # noqa: E402

QUERY = "0-dimensional biomaterials lack inductive properties."  # SciFact test query 0


def save_png(png: bytes, path: Path) -> None:
    """`png` as a 128-colour palette PNG (a screenshot of flat colours loses nothing visible)."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")


def shoot_whole_page(driver, path: Path, max_height: int = 2400) -> None:
    """The page as loaded, as tall as it is (up to `max_height` pixels): the window grows by what the
    viewport lacks."""
    driver.execute_script("document.documentElement.style.overflow = 'hidden'")  # no scrollbar in the picture
    for _ in range(3):
        missing = driver.execute_script("return document.documentElement.scrollHeight - window.innerHeight")
        size = driver.get_window_size()
        if missing == 0 or size["height"] >= max_height:
            break
        driver.set_window_size(size["width"], min(size["height"] + missing, max_height))
    save_png(driver.get_screenshot_as_png(), path)


def shoot_search_page(driver, index: Path, port: int, path: Path) -> None:
    """Serve SciFact (BM25 + FIRST) with `rankline serve`, search QUERY from the page, take the view."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "scifact.yaml"
        config.write_text(f"retriever: {{index: {index.resolve()}, method: bm25, k: 20}}\n"
                          "reranker: {name: first, depth: 20}\nserve: {max_k: 20}\n")
        server = subprocess.Popen([str(ROOT / ".venv/bin/rankline"), "serve", str(config), "--port", str(port)])
        try:
            deadline = time.monotonic() + 900
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"rankline serve exited with {server.returncode}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("rankline serve was not ready after 15 minutes")
                time.sleep(2)
            driver.set_window_size(1100, 1000)
            driver.get(f"http://127.0.0.1:{port}/")
            k = driver.find_element(By.ID, "k")
            k.send_keys(Keys.CONTROL, "a")
            k.send_keys("3")
            driver.find_element(By.ID, "query").send_keys(QUERY, Keys.ENTER)
            WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.hit"))
            driver.execute_script("document.activeElement.blur()")
            shoot_whole_page(driver, path)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "out" / "demo", help="make demo's output folder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--port", type=int, default=8765, help="port for rankline serve (loopback)")
    args = parser.parse_args()
    needed = [args.demo / "report.html", args.demo / "report-ci.html", args.demo / "scifact-index"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make demo` first (or pass --demo)")
    driver = start_chromium(1100, 1000)
    try:
        for name in ("report", "report-ci"):
            driver.set_window_size(1100, 1000)
            driver.get((args.demo / f"{name}.html").resolve().as_uri())
            shoot_whole_page(driver, args.out / f"{name}.png")
        shoot_search_page(driver, args.demo / "scifact-index", args.port, args.out / "search-page.png")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
