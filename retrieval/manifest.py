"""The manifest of an index folder: what was indexed, with what, and a checksum of every file.

Writing the manifest (atomically) is the commit point of every build or add: files of a new
generation are written under new names first, so an interrupted build leaves the previous manifest
and the files it names intact.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rankline.formats import atomic_write
from rankline.retrieval.corpus import file_sha256

MANIFEST = "manifest.json"
FORMAT = 1


def rankline_version() -> str:
    try:
        return version("rankline")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Manifest:
    generation: int
    count: int
    sources: list[dict[str, Any]]  # {"path", "sha256", "count"} per corpus, in indexing order
    docstore: str
    files: dict[str, str]  # path relative to the folder -> sha256 of its bytes
    dense: dict[str, Any] | None = None
    bm25: dict[str, Any] | None = None
    rankline_version: str = field(default_factory=rankline_version)
    format: int = FORMAT

    def write(self, folder: Path) -> None:
        with atomic_write(folder / MANIFEST) as fh:
            json.dump(asdict(self), fh, indent=2)
            fh.write("\n")

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: not a rankline index (no {MANIFEST}); build one with `rankline index`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this rankline reads format {FORMAT}")
            manifest = cls(**data)
            manifest._check()
            return manifest
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: corrupted or unsupported manifest ({exc}); it cannot be repaired: "
                             "build the index again into an empty folder") from None

    def _check(self) -> None:
        """Raise ValueError/TypeError/KeyError unless the fields hang together: every part's files are
        listed with a sha256, every path stays inside the folder, the shards tile the documents."""
        def inside(rel: Any) -> str:
            if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
                raise ValueError(f"path {rel!r} is not inside the index folder")
            return rel

        def listed(rel: str) -> None:
            if inside(rel) not in self.files:
                raise ValueError(f"{rel} has no checksum")

        if not isinstance(self.count, int) or not isinstance(self.generation, int) or self.count < 0:
            raise ValueError("generation and count must be integers")
        if not isinstance(self.files, dict) or not all(isinstance(v, str) and len(v) == 64 for v in self.files.values()):
            raise ValueError("files must map paths to sha256 digests")
        for rel in self.files:
            inside(rel)
        if not isinstance(self.sources, list) or not all(isinstance(s["sha256"], str) and isinstance(s["path"], str)
                                                          and isinstance(s["count"], int) for s in self.sources):
            raise ValueError("sources must list path, sha256 and count of each corpus")
        listed(self.docstore)
        if self.dense is not None:
            for key in ("file", "encoder", "encoder_sha256", "dim", "normalize", "index_type", "factory"):
                self.dense[key]
            listed(self.dense["file"])
            end = 0
            for shard in self.shards():
                listed(shard["file"])
                if not isinstance(shard["start"], int) or not isinstance(shard["rows"], int) or shard["start"] < end or shard["rows"] <= 0:
                    raise ValueError(f"dense shard {shard['file']} overlaps another or is empty")
                end = shard["start"] + shard["rows"]
            if end > self.count:
                raise ValueError(f"dense shards cover {end} documents, the index {self.count}")
        if self.bm25 is not None:
            prefix = inside(self.bm25["dir"]) + "/"
            if not any(rel.startswith(prefix) for rel in self.files):
                raise ValueError(f"{self.bm25['dir']} has no checksummed files")

    def shards(self) -> list[dict[str, Any]]:
        """The dense part's embedding shards ({"file", "start", "rows", "batch_size"}), by start; empty
        for an index without a dense part or one built before shards were kept."""
        return sorted(self.dense.get("shards", []), key=lambda s: s["start"]) if self.dense else []

    def part_of(self, rel: str) -> str:
        """Which part of the index the listed file `rel` belongs to: "docstore", "dense" (the FAISS
        file), "shard" (an embedding shard) or "bm25"."""
        if rel == self.docstore:
            return "docstore"
        if self.dense and rel == self.dense["file"]:
            return "dense"
        if any(rel == s["file"] for s in self.shards()):
            return "shard"
        if self.bm25 and rel.startswith(self.bm25["dir"] + "/"):
            return "bm25"
        raise ValueError(f"{rel}: listed in the manifest but part of nothing in it")

    def damaged(self, folder: Path, *, first: bool = False) -> list[tuple[str, str]]:
        """(file, what is wrong) for every listed file that is missing or whose bytes changed; with
        `first`, stop at the first one."""
        out: list[tuple[str, str]] = []
        for rel, expected in self.files.items():
            path = folder / rel
            if not path.is_file():
                out.append((rel, f"missing from the index folder (listed in {folder / MANIFEST})"))
            elif file_sha256(path) != expected:
                out.append((rel, "checksum mismatch: the file is truncated or corrupted"))
            if out and first:
                break
        return out

    def repair_command(self, folder: Path) -> str:
        corpora = " ".join(shlex.quote(s["path"]) for s in self.sources)
        return f"rankline index {corpora} --out {shlex.quote(str(folder))} --repair"

    def damage_error(self, folder: Path, rel: str, problem: str) -> ValueError:
        """The one-line error for a damaged file: which file, what is wrong, and the command that repairs it."""
        return ValueError(f"{folder / rel}: {problem}; repair the index with `{self.repair_command(folder)}` "
                          "(rebuilds only the damaged parts)")

    def verify(self, folder: Path) -> None:
        """Raise ValueError naming the first file that is missing or whose bytes changed, and saying
        how to repair the index."""
        for rel, problem in self.damaged(folder, first=True):
            raise self.damage_error(folder, rel, problem)


def checksums(folder: Path, entries: list[str]) -> dict[str, str]:
    """sha256 of each entry (a file, or every file under a folder), keyed by path relative to `folder`."""
    out: dict[str, str] = {}
    for entry in entries:
        path = folder / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[os.path.relpath(f, folder)] = file_sha256(f)
    return out
