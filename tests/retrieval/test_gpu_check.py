"""The GPU path's device choice and benchmarks/gpu_check.py, on a machine with or without a GPU: which
GPUs a FAISS index goes to for each device (FAISS's GPU count and its GPU calls replaced by fakes,
so only the choice is tested), what the check plans to run where, its agreement figures on
hand-made results, and that without a GPU it says so in one line and exits 0 having measured
nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from rankline.retrieval import faiss_index

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("device, faiss_gpus, gpus", [
    (None, 0, []), (None, 2, [0, 1]), ("cpu", 2, []), ("mps", 1, []), ("cuda", 0, []), ("cuda", 2, [0, 1]),
    ("cuda:1", 2, [1]), ("cuda:0", 0, []),
])
def test_index_gpus(device, faiss_gpus, gpus):
    assert faiss_index.index_gpus(device, faiss_gpus) == gpus


@pytest.mark.parametrize("device, message", [
    ("cuda:2", r"device 'cuda:2': FAISS sees 2 GPU\(s\), cuda:0\.\.cuda:1"),
    ("gpu", "unknown device 'gpu': expected cpu, cuda, cuda:N or mps"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("cpu:1", "unknown device 'cpu:1'"),
])
def test_index_gpus_refuses(device, message):
    with pytest.raises(ValueError, match=message):
        faiss_index.index_gpus(device, 2)


@pytest.fixture
def fake_gpu_faiss(monkeypatch):
    """FAISS reporting `gpus[0]` GPUs, whose GPU moves record their arguments (and fail for HNSW, as
    FAISS has no GPU version of it)."""
    import faiss

    moves, gpus = [], [0]

    def move(index, to):
        if "HNSW" in type(index).__name__:
            raise RuntimeError("Error in faiss::gpu::ToGpuCloner: This index type is not implemented on GPU.")
        moves.append(to)
        return "moved"

    def to_gpu(resources, gpu, index):
        return move(index, ("one", gpu))

    def to_gpus(index, gpus):
        return move(index, ("list", list(gpus)))

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus[0], raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpus_list", to_gpus, raising=False)
    return SimpleNamespace(moves=moves, gpus=gpus)


def test_place_moves_the_index_only_where_faiss_sees_a_gpu(fake_gpu_faiss):
    flat = faiss_index.build(np.eye(4, dtype=np.float32), "Flat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing asked for a GPU: no warning
        assert faiss_index.place(flat, None) == (flat, "cpu")
        assert faiss_index.place(flat, "cpu") == (flat, "cpu")
    with pytest.warns(UserWarning, match="device cuda: FAISS sees no GPU .* searched on the CPU"):
        assert faiss_index.place(flat, "cuda") == (flat, "cpu")
    assert fake_gpu_faiss.moves == []
    fake_gpu_faiss.gpus[0] = 2
    assert faiss_index.place(flat, None) == ("moved", "cuda:0,cuda:1")
    assert faiss_index.place(flat, "cuda:1") == ("moved", "cuda:1")
    assert faiss_index.place(flat, "cpu") == (flat, "cpu")
    assert fake_gpu_faiss.moves == [("list", [0, 1]), ("one", 1)]
    hnsw = faiss_index.build(np.eye(4, dtype=np.float32), "HNSW32,Flat")
    assert faiss_index.place(hnsw, None) == (hnsw, "cpu")
    with pytest.warns(UserWarning, match="FAISS has no GPU version of IndexHNSWFlat"):
        assert faiss_index.place(hnsw, "cuda:0") == (hnsw, "cpu")


def test_dense_retriever_says_where_its_index_is(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    """On the CPU any k is searched; on a GPU (here: said to be, with FAISS's limit lowered to 4) more
    than FAISS's GPU limit is refused before anything is searched."""
    from rankline.formats import Query
    from rankline.retrieval import BuildOptions, build_index, open_retriever

    build_index([corpus_a], tmp_path / "idx", BuildOptions(dense=True, bm25=False, encoder=tiny_encoder, progress=False))
    retriever = open_retriever(tmp_path / "idx", device="cpu")
    assert retriever.index_device == "cpu"
    monkeypatch.setattr(faiss_index, "GPU_MAX_K", 4)
    assert len(retriever.search(Query("q", "apples"), 5)) == 5
    retriever.index_device = "cuda:0"
    assert len(retriever.search(Query("q", "apples"), 4)) == 4
    with pytest.raises(ValueError, match=r"k=5: FAISS returns at most 4 hits per query from an index on the GPU \(cuda:0\)"):
        retriever.search(Query("q", "apples"), 5)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            open_retriever(tmp_path / "idx", device="cuda")


@pytest.fixture(scope="module")
def gpu_check(benchmark_script):
    return benchmark_script("gpu_check")


@pytest.mark.parametrize("torch_gpus, faiss_gpus, device, want", [
    (0, 0, "cuda", None),
    (1, 0, "cuda", ("cuda", "cpu", "cuda")),  # faiss-cpu beside a CUDA torch: the index stays on the CPU
    (0, 1, "cuda", ("cpu", "cuda", "cpu")),
    (2, 2, "cuda:1", ("cuda:1", "cuda:1", "cuda:1")),
])
def test_plan(gpu_check, torch_gpus, faiss_gpus, device, want):
    got = gpu_check.plan(device, torch_gpus, faiss_gpus)
    assert (got if got is None else (got.encoder, got.index, got.reranker)) == want


def test_plan_refuses_a_device_that_is_not_a_gpu(gpu_check):
    with pytest.raises(ValueError, match="--device must be cuda or cuda:N, got 'cpu'"):
        gpu_check.plan("cpu", 1, 1)


def test_agreement_and_report_on_hand_made_results(gpu_check):
    """Top 10s sharing 9 and 10 documents (overlap 0.95), scores 0.5 apart at most on shared ones,
    one of two reranked orders equal; the GPU path's column names where each part ran."""
    ids = [f"d{i}" for i in range(11)]
    gpu = gpu_check.PathRun({"encoder": "cuda:0", "index": "cpu", "reranker": "cuda:0"}, np.zeros((2, 3), np.float32),
                            [[(d, 1.0) for d in ids[:10]], [(d, 2.0) for d in ids[:10]]], [ids[:10], ids[:10]],
                            {"encode": 1.0, "index": 1.0, "search": 0.5, "rerank": 2.0})
    cpu = gpu_check.PathRun({"encoder": "cpu", "index": "cpu", "reranker": "cpu"}, np.full((2, 3), 0.25, np.float32),
                            [[(d, 1.0) for d in ids[1:11]], [(d, 2.5) for d in ids[:10]]], [ids[:10], ids[1:11]],
                            {"encode": 4.0, "index": 1.0, "search": 1.0, "rerank": 8.0})
    assert gpu_check.agreement(gpu, cpu) == {
        "max embedding difference": 0.25, "mean overlap@10": 0.95, "max score difference (shared top 10)": 0.5,
        "reranked queries with the same top 10 order": 0.5}
    lines = gpu_check.report(gpu, cpu, 20, 2, 2).splitlines()
    assert lines[1].split()[:2] == ["encode", "cuda:0"] and "4.00x" in lines[1]
    assert lines[2].split()[:2] == ["index", "cpu"] and lines[3].split()[:2] == ["search", "cpu"]
    assert lines[4].split()[:2] == ["rerank", "cuda:0"] and "4.00x" in lines[4]


def test_without_a_gpu_it_says_so_and_measures_nothing(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "detect", lambda: (0, 0))
    assert gpu_check.main(["--corpus", str(tmp_path / "no-such-corpus"), "--docs", "300"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu_check: no GPU here (torch.cuda sees none, FAISS sees none)")
    assert "encode 300 SciFact documents" in out and "nothing was measured" in out


def test_the_command_exits_0_on_a_machine_without_a_gpu():
    """The script as a command, with every GPU hidden (CUDA_VISIBLE_DEVICES=""): exit 0, one line."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no GPU here") and done.stdout.count("\n") == 1, done.stdout
