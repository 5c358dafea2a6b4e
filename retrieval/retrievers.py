"""Opening an index folder as a retriever: the entry point the pipelines and the service use."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rankline.retrieval.base import Retriever
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.manifest import Manifest

METHODS = ("dense", "bm25", "hybrid")
_DENSE_OPTIONS = {"encoder", "device", "nprobe", "ef_search", "batch_size"}
_BM25_OPTIONS = {"k1", "b", "threads"}
_HYBRID_OPTIONS = {"fusion", "rrf_k", "alpha", "fusion_depth"}


def open_index(index_dir: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """The manifest of `index_dir`, after checking every file's checksum (unless `verify` is False)."""
    folder = Path(index_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such index folder")
    manifest = Manifest.read(folder)
    if verify:
        manifest.verify(folder)
    return manifest


def open_retriever(index_dir: str | os.PathLike, method: str = "dense", *, verify: bool = True, with_text: bool = True,
                   **options: Any) -> Retriever:
    """A retriever over the index folder `index_dir`; its hits carry title and text from the folder's
    document store (unless `with_text` is False).

    method "dense": options encoder, device, nprobe, ef_search, batch_size.
    method "bm25": options k1 (0.9), b (0.4), threads.
    method "hybrid": BM25 and dense fused; the options of both plus fusion ("rrf" or "interpolate"),
    rrf_k (60), alpha (interpolation weight of BM25; dense gets 1 - alpha; 0.5) and fusion_depth (1000, the
    number of hits taken from each part).
    """
    from rankline.retrieval.bm25 import BM25Retriever
    from rankline.retrieval.dense import DenseRetriever
    from rankline.retrieval.hybrid import HybridRetriever

    if method not in METHODS:
        raise ValueError(f"unknown retrieval method {method!r}: expected one of {', '.join(METHODS)}")
    allowed = {"dense": _DENSE_OPTIONS, "bm25": _BM25_OPTIONS, "hybrid": _DENSE_OPTIONS | _BM25_OPTIONS | _HYBRID_OPTIONS}[method]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) for {method} retrieval: {', '.join(unknown)} (expected some of {', '.join(sorted(allowed))})")
    folder = Path(index_dir)
    manifest = open_index(folder, verify=verify)
    store = DocStore(folder / manifest.docstore)
    dense_opts = {k: v for k, v in options.items() if k in _DENSE_OPTIONS}
    bm25_opts = {k: v for k, v in options.items() if k in _BM25_OPTIONS}
    if method == "dense":
        retriever = DenseRetriever(folder, manifest, store, with_text=with_text, **dense_opts)
    elif method == "bm25":
        retriever = BM25Retriever(folder, manifest, store, with_text=with_text, **bm25_opts)
    else:
        alpha = float(options.get("alpha", 0.5))
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        parts = [BM25Retriever(folder, manifest, store, with_text=False, **bm25_opts),
                 DenseRetriever(folder, manifest, store, with_text=False, **dense_opts)]
        retriever = HybridRetriever(parts, store, fusion=options.get("fusion", "rrf"), rrf_k=int(options.get("rrf_k", 60)),
                                    weights=[alpha, 1 - alpha], fusion_depth=int(options.get("fusion_depth", 1000)), with_text=with_text)
    retriever.opened_with = {"index_dir": str(folder.resolve()), "method": method, "verify": verify,
                             "with_text": with_text, **options}
    return retriever
