"""Building an index folder, adding documents to it, and resuming an interrupted build.

Layout of an index folder DIR (generation g counts commits)::

    manifest.json      what is indexed, with what, and a sha256 of every file below
    docs-g.sqlite      the document store: position <-> doc id, title, text
    dense-g.faiss      FAISS index; row i is the document at position i
    bm25-g/            Lucene index (pyserini), contents = title + " " + text
    .build/            work in progress, removed on commit: state.json, the new docs-g.sqlite,
                       dense shards (one .npy per `shard_size` documents, written as each finishes),
                       the new dense.faiss and bm25/

A build first writes everything under .build/, then moves the files to their generation-g names and
writes manifest.json atomically; that write is the commit. An interrupted build is resumed by running
the same command again: finished steps and dense shards are kept when the plan (corpora, encoder,
index type, shard size) is unchanged, and thrown away otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from rankline.formats import atomic_write
from rankline.retrieval.corpus import CorpusSource, doc_contents, iter_docs
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.encoder import DEFAULT_ENCODER, Encoder, load_encoder
from rankline.retrieval.manifest import MANIFEST, Manifest, checksums

BM25_CONTENTS = "title + ' ' + text (pyserini BEIR 'flat')"
WORK = ".build"
_GENERATION_FILE = re.compile(r"docs-\d+\.sqlite|dense-\d+\.faiss|bm25-\d+")
_LUCENE_ARGS = ["-storePositions", "-storeDocvectors", "-storeRaw"]  # as pyserini's BEIR flat indexes


@dataclass(frozen=True)
class BuildOptions:
    """What to build. `encoder` and `index_type` default to the existing index's, else to
    all-MiniLM-L6-v2 and flat."""

    dense: bool = True
    bm25: bool = True
    encoder: str | None = None
    index_type: str | None = None
    normalize: bool = True
    batch_size: int = 64
    shard_size: int = 8192
    device: str | None = None
    threads: int = 1
    progress: bool = True


@dataclass(frozen=True)
class BuildReport:
    folder: Path
    count: int
    added: int
    built: tuple[str, ...]  # the kinds written by this run ("dense", "bm25"); empty when up to date
    resumed: bool


def build_index(corpora: Sequence[str | os.PathLike], out: str | os.PathLike, options: BuildOptions = BuildOptions(),
                *, add: bool = False) -> BuildReport:
    """Index `corpora` into the folder `out`, or bring an existing index up to date.

    - `out` has no index: build one over all corpora.
    - `out` indexes exactly these corpora: build only the requested kinds it lacks (else nothing).
    - `out` indexes other corpora: with `add`, append the new corpora's documents to every kind it
      has (and build requested kinds it lacks over all documents); without `add`, refuse.
    """
    if not options.dense and not options.bm25:
        raise ValueError("nothing to build: choose --dense and/or --bm25")
    if options.batch_size <= 0 or options.shard_size <= 0:
        raise ValueError("--batch-size and --shard-size must be positive")
    folder = Path(out)
    current = Manifest.read(folder) if (folder / MANIFEST).exists() else None
    sources = [CorpusSource.of(c) for c in corpora]
    if not sources:
        raise ValueError("no corpus given")
    known = {s["sha256"] for s in current.sources} if current else set()
    new_sources = [s for s in sources if s.sha256 not in known]
    if len({s.sha256 for s in new_sources}) != len(new_sources):
        raise ValueError("the same corpus is given twice")
    if current and new_sources and not add:
        indexed = ", ".join(s["path"] for s in current.sources)
        raise ValueError(f"{folder} already indexes {indexed}; pass --add to add {new_sources[0].path} to it, or choose another --out")

    has = {k: current is not None and getattr(current, k) is not None for k in ("dense", "bm25")}
    want = {"dense": options.dense, "bm25": options.bm25}
    # kinds the index has follow added documents; requested kinds it lacks are built over everything
    todo = tuple(k for k in ("dense", "bm25") if (has[k] and new_sources) or (want[k] and not has[k]))
    if not todo:
        return BuildReport(folder, current.count, 0, (), False)

    encoder = _encoder_for(current, options) if "dense" in todo else None
    plan = _plan(current, new_sources, todo, encoder, options)
    work = folder / WORK
    resumed = _open_work(work, plan)
    state = json.loads((work / "state.json").read_text())

    base_count = current.count if current else 0
    store_path = work / "docs.sqlite"
    if not state.get("docstore"):
        counts = _build_docstore(store_path, current, folder, new_sources)
        _save_state(work, state, docstore=True, source_counts=counts)
    with DocStore(store_path) as store:
        count = len(store)
        if "dense" in todo and not state.get("dense"):
            lo = base_count if current and current.dense else 0
            _build_dense(work, store, lo, count, encoder, plan["dense"], current, folder, options)
            _save_state(work, state, dense=True)
        if "bm25" in todo and not state.get("bm25"):
            lo = base_count if current and current.bm25 else 0
            _build_bm25(work, store, lo, count, current, folder, options)
            _save_state(work, state, bm25=True)

    _commit(folder, work, current, new_sources, state.get("source_counts", []), count, todo, plan)
    return BuildReport(folder, count, count - base_count, todo, resumed)


def _encoder_for(current: Manifest | None, options: BuildOptions) -> Encoder:
    if current and current.dense:
        name = options.encoder or current.dense["encoder"]
        encoder = load_encoder(name, device=options.device)
        if encoder.weights_sha256 != current.dense["encoder_sha256"]:
            raise ValueError(f"encoder {name!r} differs from the one this index was built with "
                             f"({current.dense['encoder']!r}, weights sha256 {current.dense['encoder_sha256'][:12]}...)")
        return encoder
    return load_encoder(options.encoder or DEFAULT_ENCODER, device=options.device)


def _plan(current: Manifest | None, new_sources: list[CorpusSource], todo: tuple[str, ...], encoder: Encoder | None,
          options: BuildOptions) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "base_generation": current.generation if current else 0,
        "new_sources": [asdict(s) for s in new_sources],
        "todo": list(todo),
    }
    if encoder is not None:
        if current and current.dense:
            plan["dense"] = {k: current.dense[k] for k in ("index_type", "factory", "normalize")}
            if options.index_type and options.index_type != current.dense["index_type"]:
                raise ValueError(f"this index is {current.dense['index_type']!r}; cannot add documents as {options.index_type!r}")
        else:
            plan["dense"] = {"index_type": options.index_type or "flat", "factory": None, "normalize": options.normalize}
        plan["dense"].update(encoder=encoder.name, encoder_sha256=encoder.weights_sha256, dim=encoder.dim,
                             shard_size=options.shard_size)
    return plan


def _open_work(work: Path, plan: dict[str, Any]) -> bool:
    """Reuse `work` when it holds an interrupted run of the same plan (returns True), else start afresh."""
    state_path = work / "state.json"
    if state_path.is_file():
        try:
            if json.loads(state_path.read_text()).get("plan") == plan:
                return True
        except json.JSONDecodeError:
            pass
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _write_json(state_path, {"plan": plan})
    return False


def _save_state(work: Path, state: dict[str, Any], **done: bool) -> None:
    state.update(done)
    _write_json(work / "state.json", state)


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2)


def _build_docstore(path: Path, current: Manifest | None, folder: Path, new_sources: list[CorpusSource]) -> list[int]:
    """Write the store of the new generation (the current documents, then the new ones); returns how
    many documents each new corpus brought."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if current:
        shutil.copyfile(folder / current.docstore, tmp)
    with DocStore(tmp, writable=True) as store:
        counts = [store.append(iter_docs(source.path), source=source.path) for source in new_sources]
    os.replace(tmp, path)
    return counts


def _build_dense(work: Path, store: DocStore, lo: int, count: int, encoder: Encoder, spec: dict[str, Any],
                 current: Manifest | None, folder: Path, options: BuildOptions) -> None:
    from rankline.retrieval import faiss_index

    shards = work / "dense-shards"
    shards.mkdir(exist_ok=True)
    size = spec["shard_size"]
    starts = list(range(lo, count, size))
    done = {s for s in starts if _shard_ok(shards / f"{s:012d}.npy", min(size, count - s), encoder.dim)}
    bar = tqdm(total=count - lo, initial=sum(min(size, count - s) for s in done), desc="encode", unit="doc",
               disable=not options.progress)
    with bar:
        for s in starts:
            if s in done:
                continue
            texts = [doc_contents(d) for d in store.iter_range(s, min(count, s + size))]
            emb = encoder.encode_documents(texts, batch_size=options.batch_size, normalize=spec["normalize"], progress=bar)
            with atomic_write(shards / f"{s:012d}.npy", "wb") as fh:
                np.save(fh, emb)
    embeddings = np.concatenate([np.load(shards / f"{s:012d}.npy") for s in starts]) if starts else np.empty((0, encoder.dim), np.float32)
    if current and current.dense:
        index = faiss_index.read(folder / current.dense["file"])
        index.add(embeddings)
    else:
        spec["factory"] = faiss_index.factory_string(spec["index_type"], len(embeddings), encoder.dim)
        index = faiss_index.build(embeddings, spec["factory"])
    tmp = work / "dense.faiss.tmp"
    faiss_index.write(index, tmp)
    os.replace(tmp, work / "dense.faiss")
    _write_json(work / "dense.json", spec)


def _shard_ok(path: Path, rows: int, dim: int) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == (rows, dim)
    except (OSError, ValueError):
        return False


def _build_bm25(work: Path, store: DocStore, lo: int, count: int, current: Manifest | None, folder: Path,
                options: BuildOptions) -> None:
    from rankline.retrieval.lucene_env import pyserini_lucene

    target = work / "bm25"
    shutil.rmtree(target, ignore_errors=True)
    append = bool(current and current.bm25)
    if append:
        shutil.copytree(folder / current.bm25["dir"], target)
    indexer = pyserini_lucene().LuceneIndexer(args=["-index", str(target), *_LUCENE_ARGS], append=append, threads=options.threads)
    batch: list[dict[str, str]] = []
    with tqdm(total=count - lo, desc="bm25", unit="doc", disable=not options.progress) as bar:
        for doc in store.iter_range(lo, count):
            batch.append({"id": doc.docid, "contents": doc_contents(doc)})
            if len(batch) == 1000:
                indexer.add_batch_dict(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            indexer.add_batch_dict(batch)
            bar.update(len(batch))
    indexer.close()
    (target / "write.lock").unlink(missing_ok=True)


def _commit(folder: Path, work: Path, current: Manifest | None, new_sources: list[CorpusSource], source_counts: list[int],
            count: int, todo: tuple[str, ...], plan: dict[str, Any]) -> None:
    gen = plan["base_generation"] + 1
    docstore = f"docs-{gen}.sqlite"
    os.replace(work / "docs.sqlite", folder / docstore)
    dense = dict(current.dense) if current and current.dense else None
    bm25 = dict(current.bm25) if current and current.bm25 else None
    if "dense" in todo:
        spec = json.loads((work / "dense.json").read_text())
        dense = {k: spec[k] for k in ("encoder", "encoder_sha256", "dim", "normalize", "index_type", "factory")}
        dense.update(file=f"dense-{gen}.faiss", metric="inner_product", count=count)
        os.replace(work / "dense.faiss", folder / dense["file"])
    if "bm25" in todo:
        bm25 = {"dir": f"bm25-{gen}", "contents": BM25_CONTENTS, "analyzer": "Lucene English (Porter stemmer, stopwords)",
                "count": count}
        shutil.rmtree(folder / bm25["dir"], ignore_errors=True)
        os.replace(work / "bm25", folder / bm25["dir"])
    sources = list(current.sources) if current else []
    sources += [{**asdict(s), "count": n} for s, n in zip(new_sources, source_counts)]
    entries = [docstore] + ([dense["file"]] if dense else []) + ([bm25["dir"]] if bm25 else [])
    manifest = Manifest(generation=gen, count=count, sources=sources, docstore=docstore,
                        files=checksums(folder, entries), dense=dense, bm25=bm25)
    manifest.write(folder)
    for path in folder.iterdir():  # files of older generations (or of a commit interrupted before its manifest)
        if path.name not in entries and _GENERATION_FILE.fullmatch(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(work, ignore_errors=True)

