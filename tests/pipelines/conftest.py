"""Pipelines fixtures: one Ray instance for the whole test session, and the toy stages."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_toy_stages():
    """Import toy_stages.py under a fixed name; Ray workers receive its classes by value."""
    name = "rankline_test_toy_stages"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "toy_stages.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def toy():
    return _load_toy_stages()


@pytest.fixture(scope="session")
def ray_session(toy):
    """Start Ray once per session on 127.0.0.1 (no dashboard, 2 CPUs); ray.shutdown() at the end."""
    import ray

    from rankline.pipelines.actors import set_local_ray_env

    set_local_ray_env()
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(toy)
    ray.init(
        num_cpus=4,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
    )
    yield ray
    ray.shutdown()
