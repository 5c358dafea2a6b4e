"""Pipelines fixtures: the toy stages, sent by value to the session's Ray."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def load_stages(filename: str):
    """Import a stages file beside this one (toy_stages.py, sharded_stages.py) under a fixed name,
    rankline_test_<stem>, once; Ray workers receive its classes by value."""
    name = "rankline_test_" + Path(filename).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def toy():
    return load_stages("toy_stages.py")


@pytest.fixture(scope="session")
def ray_session(ray_session, toy):
    """The session's Ray (tests/conftest.py), to which the toy stages are sent by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(toy)
    return ray_session
