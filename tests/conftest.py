"""Shared test fixtures: where the real benchmark data and the parity fixtures live."""
from __future__ import annotations

import importlib.util
import os
import sys
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
def benchmark_script():
    """`load(name)`: benchmarks/<name>.py imported as the module <name>, once (registered in sys.modules
    first, where dataclasses look their module up)."""

    def load(name: str):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once per session as rankline starts a local one (`start_local_ray`: every socket on
    127.0.0.1, no dashboard), with 4 CPUs; ray.shutdown() at the end."""
    import ray

    from rankline.pipelines.actors import start_local_ray

    start_local_ray(num_cpus=4, runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by selenium (tests/browser.py), one for the session."""
    spec = importlib.util.spec_from_file_location("rankline_test_browser", Path(__file__).with_name("browser.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        driver = module.start_chromium()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield driver
    driver.quit()
