"""FAISS indexes for inner-product search: named types, factory strings, search parameters, GPU."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

INDEX_TYPES = ("flat", "hnsw", "ivfpq")


def factory_string(index_type: str, n: int, dim: int) -> str:
    """The FAISS factory string for `index_type`: a named type sized for `n` vectors of `dim`
    dimensions, or any FAISS factory string passed through unchanged.

    hnsw: HNSW with 32 neighbours. ivfpq: about 4*sqrt(n) inverted lists (at least 39 training points
    each, FAISS's own minimum), PQ with dim/8 sub-quantisers (fewer when dim is not a multiple of 8)
    and 8-bit codes (fewer for tiny corpora, which cannot train 256 centroids).
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
        return f"IVF{nlist},PQ{m}x{nbits}"
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


def on_gpu_if_available(index: Any) -> Any:
    """The index moved to every GPU FAISS sees, or unchanged when it sees none (faiss-cpu)."""
    import faiss

    if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def read(path: str) -> Any:
    import faiss

    return faiss.read_index(str(path))


def write(index: Any, path: str) -> None:
    import faiss

    faiss.write_index(index, str(path))
