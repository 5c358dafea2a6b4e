"""Shared test fixtures: where the real benchmark data and the parity fixtures live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RANKLINE_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert DATA.is_dir(), f"benchmark data not found at {DATA} (set RANKLINE_SHARED)"
    return DATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"parity fixtures not found at {FIXTURES} (set RANKLINE_SHARED)"
    return FIXTURES


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium from Debian's packages (`chromium`, `chromium-driver`; `make test` installs them
    where missing), driven by selenium through that chromedriver, so nothing is downloaded."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("browser tests need chromium and chromedriver on PATH: run `make test` "
                    "or `apt-get install chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
