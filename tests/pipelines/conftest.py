"""Pipelines fixtures: one Ray instance for the whole test session, and the toy stages."""
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
def ray_session(toy):
    """Start Ray once per session as rankline starts a local one (`start_local_ray`: every socket on
    127.0.0.1, no dashboard), with 4 CPUs; ray.shutdown() at the end."""
    import ray
    from ray import cloudpickle

    from rankline.pipelines.actors import start_local_ray

    cloudpickle.register_pickle_by_value(toy)
    start_local_ray(num_cpus=4, runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    yield ray
    ray.shutdown()
