"""FAISS indexes for inner-product search: named types, factory strings, search parameters, GPU."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

INDEX_TYPES = ("flat", "hnsw", "ivfpq")
GPU_MAX_K = 2048  # the most hits per query FAISS returns from an index on a GPU (its GPU_MAX_SELECTION_K)


def factory_string(index_type: str, n: int, dim: int) -> str:
    """The FAISS factory string for `index_type`: a named type sized for `n` vectors of `dim`
    dimensions, or any FAISS factory string passed through unchanged.

    hnsw: HNSW with 32 neighbours. ivfpq: about 4*sqrt(n) inverted lists (at least 39 training points
    each, FAISS's own minimum), PQ with dim/8 sub-quantisers (fewer when dim is not a multiple of 8)
    and 8-bit codes (fewer for tiny corpora, which cannot train 256 centroids), without polysemous
    training (`np`: rankline never searches codes by Hamming distance, and that training took about 6x
    the product quantizer's own at 1M vectors).
    """
    kind = index_type.lower()
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind == "ivfpq":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        m = next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)
        nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))
        return f"IVF{nlist},PQ{m}x{nbits}np"
    return index_type


def new_index(spec: str, dim: int) -> Any:
    import faiss

    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"index type {spec!r} is neither one of {', '.join(INDEX_TYPES)} nor a valid FAISS factory string") from exc


_COMMON_DIMS = (384, 768, 1024)


def check_index_type(index_type: str, dim: int | None = None) -> None:
    """Raise ValueError unless `index_type` is a named type or a FAISS factory string valid for `dim`
    dimensions (checked before any encoding, so a typo costs nothing). Without `dim` (before the
    encoder is loaded), refuse only a string that no common encoder dimension makes valid."""
    if not isinstance(index_type, str) or not index_type.strip():
        raise ValueError(f"--index-type must be one of {', '.join(INDEX_TYPES)} or a FAISS factory string, got {index_type!r}")
    if index_type.lower() in INDEX_TYPES:
        return
    if dim is not None:
        new_index(index_type, dim)
        return
    errors = []
    for d in _COMMON_DIMS:
        try:
            new_index(index_type, d)
            return
        except ValueError as exc:
            errors.append(exc)
    raise errors[0]


def check_trainable(spec: str, dim: int, n: int) -> None:
    """Raise ValueError when an index of factory string `spec` cannot be trained on `n` vectors (k-means
    needs at least as many points as centroids: the IVF lists, the 2**nbits PQ codes)."""
    need = _training_points(new_index(spec, dim))
    if n < need:
        raise ValueError(f"index type {spec!r} needs at least {need} documents to train, the corpus has {n}; "
                         f"choose fewer lists or codes, or --index-type flat")


def _training_points(index: Any) -> int:
    import faiss

    index = faiss.downcast_index(index)
    need = 1
    if getattr(index, "nlist", None):
        need = max(need, int(index.nlist))
    pq = getattr(index, "pq", None)
    if pq is not None:
        need = max(need, int(pq.ksub))
    inner = getattr(index, "index", None)  # IndexPreTransform and other wrappers
    if inner is not None:
        need = max(need, _training_points(inner))
    return need


def build(embeddings: np.ndarray, spec: str) -> Any:
    """A FAISS index over `embeddings` (trained on them when the type needs training)."""
    index = new_index(spec, embeddings.shape[1])
    data = np.ascontiguousarray(embeddings, dtype=np.float32)
    try:
        if not index.is_trained:
            index.train(data)
        index.add(data)
    except RuntimeError as exc:
        raise ValueError(f"cannot build FAISS index {spec!r} over {len(data)} vectors: {str(exc).splitlines()[-1]}") from exc
    return index


def set_search_params(index: Any, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Apply search-time knobs where the index has them (nprobe for IVF, efSearch for HNSW)."""
    import faiss

    params = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is not None:
            try:
                params.set_index_parameter(index, name, int(value))
            except RuntimeError:
                pass  # the index has no such knob (e.g. nprobe on a flat index)


def gpu_count() -> int:
    """How many GPUs FAISS can use: 0 with faiss-cpu (the `gpu` extra installs faiss-gpu)."""
    import faiss

    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def index_gpus(device: str | None, faiss_gpus: int) -> list[int]:
    """The GPUs a FAISS index goes to for `device` (the torch device the encoder runs on), when FAISS
    sees `faiss_gpus` GPUs; [] keeps it on the CPU. None (the default) and "cuda": every GPU FAISS
    sees; "cuda:N": GPU N (FAISS numbers the GPUs as torch does); "cpu" and "mps": none (FAISS has
    no MPS path)."""
    kind, _, number = str(device).partition(":")
    if device is not None and (kind not in ("cpu", "mps", "cuda") or (number and not (kind == "cuda" and number.isdigit()))):
        raise ValueError(f"unknown device {device!r}: expected cpu, cuda, cuda:N or mps")
    if kind in ("cpu", "mps"):
        return []
    if not number or not faiss_gpus:
        return list(range(faiss_gpus))
    if int(number) >= faiss_gpus:
        raise ValueError(f"device {device!r}: FAISS sees {faiss_gpus} GPU(s), cuda:0..cuda:{faiss_gpus - 1}")
    return [int(number)]


def place(index: Any, device: str | None = None) -> tuple[Any, str]:
    """The index where `device` puts it (see `index_gpus`) and where that is: "cpu", "cuda:0",
    "cuda:0,cuda:1". It stays on the CPU when FAISS sees no GPU (faiss-cpu; the `gpu` extra installs
    faiss-gpu) or has no GPU version of its type (HNSW), with a warning saying so when a cuda device
    was asked for: the encoder may run on the GPU, the index is never said to."""
    import warnings

    import faiss

    gpus = index_gpus(device, gpu_count())
    if not gpus:
        if str(device).startswith("cuda"):
            warnings.warn(f"device {device}: FAISS sees no GPU (faiss-cpu installed; the 'gpu' extra installs faiss-gpu), "
                          "so the index is searched on the CPU", stacklevel=2)
        return index, "cpu"
    try:
        if len(gpus) == 1:
            moved = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpus[0], index)
        else:
            moved = faiss.index_cpu_to_gpus_list(index, gpus=gpus)
    except RuntimeError as exc:  # no GPU version of this index type
        if device is not None:
            warnings.warn(f"device {device}: FAISS has no GPU version of {type(faiss.downcast_index(index)).__name__} "
                          f"({str(exc).strip().splitlines()[-1]}), so the index is searched on the CPU", stacklevel=2)
        return index, "cpu"
    return moved, ",".join(f"cuda:{g}" for g in gpus)


def read(path: str) -> Any:
    import faiss

    return faiss.read_index(str(path))


def write(index: Any, path: str) -> None:
    import faiss

    faiss.write_index(index, str(path))
