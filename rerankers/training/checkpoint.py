"""Training checkpoints: one folder per optimizer step, written atomically and verified on load.

A checkpoint ``DIR/checkpoints/step-N`` holds

- ``weights.safetensors``: the trainable tensors by name (the LoRA adapter, or the whole model for full
  fine-tuning);
- ``optimizer.pt`` and ``scheduler.pt``: the optimizer's and the learning-rate schedule's state dicts;
- ``rng.pt``: torch's CPU (and CUDA) generator states; ``state.json``: the step (the data position: step N has
  consumed examples ``[0, N x global batch)`` of the seeded example stream), Python's and NumPy's generator
  states, the held-out history and the best step so far;
- ``manifest.json``, written last: the settings fingerprint the run was started with and the sha256 and size
  of every file above.

The folder is written under a temporary name next to its final one and renamed into place, so an
interrupted save leaves no ``step-N`` at all; on load every file's checksum is compared with the manifest
(a corrupted or truncated file is a ValueError naming it) and a checkpoint written with other settings is
refused, naming the first setting that differs. :func:`prune` keeps the last K checkpoints.

A run interrupted between checkpoints saves its last finished step; :func:`uninterrupted` keeps an interrupt from
landing inside an update (part of the tensors changed, the step count not yet), which would save weights that no
step of an uninterrupted run has.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

MANIFEST = "manifest.json"
FORMAT = 1
_STEP = re.compile(r"^step-(\d+)$")


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the block whole: a SIGINT or SIGTERM that arrives inside is held and handed to its handler on leaving
    (so the KeyboardInterrupt comes after the block). Only signals with a Python handler are held (an ignored one
    stays ignored, a default SIGTERM still ends the process); outside the main thread, where Python runs no
    handlers, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    before = {s: h for s, h in before.items() if callable(h)}
    for s in before:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if held:
            before[held[0]](held[0], None)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_difference(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first setting whose value differs, as 'NAME: A there, B here', or None when they agree."""
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} here"
    return None


def replace_folder(tmp: Path, target: Path) -> None:
    """Rename the finished folder `tmp` to `target`, replacing an existing one: the old folder is first renamed
    aside, so `target` is at every moment either the old folder or the new one, complete."""
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(target, aside)
    os.rename(tmp, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def temp_folder(target: Path) -> Path:
    """An empty temporary folder next to `target` (same file system, so the final rename is atomic)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_manifest(folder: Path, settings: Mapping[str, Any], step: int) -> None:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(folder).as_posix()] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "step": step, "settings": dict(settings), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def verify(folder: Path, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of checkpoint `folder` after checking that every file it names is there with its size and
    checksum, and (when `settings` is given) that it was written with the same settings."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"{folder}: not a training checkpoint (no {MANIFEST}); remove it or use another --out")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, this rankline reads format {FORMAT}")
        files = manifest["files"]
        int(manifest["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: corrupted or unsupported checkpoint manifest ({exc})") from None
    for name, entry in files.items():
        file = folder / name
        if not file.is_file():
            raise ValueError(f"{file}: missing from the checkpoint (its manifest names it)")
        if file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]:
            raise ValueError(f"{file}: corrupted (its size or sha256 differs from {path}); remove {folder} "
                             "to resume from the checkpoint before it")
    if settings is not None:
        diff = describe_difference(manifest.get("settings", {}), settings)
        if diff is not None:
            raise ValueError(f"{folder}: this checkpoint was written by a run with other settings ({diff}); "
                             "rerun with the same settings to resume, or train into another --out")
    return manifest


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the finished checkpoints under `root`, by step (temporary folders are not listed)."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune(root: Path, keep: int) -> None:
    """Remove all but the last `keep` checkpoints under `root`, and temporary folders a crash left behind."""
    for step, folder in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(folder, ignore_errors=True)
    for child in root.iterdir() if root.is_dir() else []:
        if child.name.startswith(".step-") and ".tmp-" in child.name:
            shutil.rmtree(child, ignore_errors=True)


@dataclass
class TrainingState:
    """What a checkpoint restores besides the tensors."""

    step: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    python_rng: Any
    numpy_rng: Any


def capture_rng() -> tuple[Any, Any, dict[str, Any]]:
    """(python state, numpy state, torch states) in forms json / torch.save keep exactly."""
    import random

    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    py = [version, list(internal), gauss]
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    npy = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    tstates = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tstates["cuda"] = torch.cuda.get_rng_state_all()
    return py, npy, tstates


def restore_rng(py: Any, npy: Any, tstates: Mapping[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))
    torch.set_rng_state(tstates["cpu"])
    if "cuda" in tstates and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tstates["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    *,
    weights: Mapping[str, Any],
    optimizer: Any,
    scheduler: Any,
    history: list[dict[str, Any]],
    best: dict[str, Any] | None,
    settings: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write ``root/step-{step}`` atomically (module docstring) and prune to the last `keep`."""
    import torch
    from safetensors.torch import save_file

    target = root / f"step-{step}"
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(target)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    py, npy, tstates = capture_rng()
    torch.save(tstates, tmp / "rng.pt")
    state = {"step": step, "history": history, "best": best, "python_rng": py, "numpy_rng": npy}
    (tmp / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
    write_manifest(tmp, settings, step)
    replace_folder(tmp, target)
    prune(root, keep)
    return target


def load_checkpoint(folder: Path, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                                                                          dict[str, Any], TrainingState]:
    """(weights, optimizer state, scheduler state, torch RNG states, state) of a verified checkpoint."""
    import torch
    from safetensors.torch import load_file

    verify(folder, settings)
    weights = load_file(str(folder / "weights.safetensors"))
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    scheduler = torch.load(folder / "scheduler.pt", weights_only=True)
    tstates = torch.load(folder / "rng.pt", weights_only=True)
    raw = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    state = TrainingState(raw["step"], raw["history"], raw["best"], raw["python_rng"], raw["numpy_rng"])
    return weights, optimizer, scheduler, tstates, state
