"""Headless Chromium for the browser tests (the `browser` fixture in tests/conftest.py) and for
docs/screenshots.py: Debian's `chromium` and `chromium-driver` packages (`make test` installs them
where missing) driven by selenium through that chromedriver, so Selenium Manager downloads nothing."""
from __future__ import annotations

import shutil


def start_chromium(width: int = 1280, height: int = 1000):
    """A selenium webdriver on headless Chromium with a `width` x `height` window at scale 1."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise RuntimeError("the browser tests need chromium and chromedriver on PATH: run `make test` "
                           "or `apt-get install chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
