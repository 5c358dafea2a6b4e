"""Building an index folder, adding documents to it, resuming an interrupted build, repairing it.

Layout of an index folder DIR (generation g counts commits)::

    manifest.json      what is indexed, with what, and a sha256 of every file below
    docs-g.sqlite      the document store: position <-> doc id, title, text
    dense-g.faiss      FAISS index; row i is the document at position i
    dense-shards/      the embeddings the FAISS index was built from, one .npy per `shard_size`
                       documents, named by the position of their first document
    bm25-g/            Lucene index (pyserini), contents = title + " " + text
    .build/            work in progress, removed on commit: state.json (the plan, the steps done and
                       a sha256 of every file written), the new docs.sqlite, new dense shards (written
                       as each finishes), the new dense.faiss and bm25/

A build first writes everything under .build/, then moves the files to their generation-g names and
writes manifest.json atomically; that write is the commit. The manifest's checksums are those taken
when each file was written, or, for a file carried over, the previous manifest's.

Nothing is built on a file that does not verify. Every run first checks every file of the current
index against its manifest (a damaged index is neither reported up to date nor extended); what it
copies (the document store, the Lucene index) is checked again as copied. An interrupted build is
resumed by running the same command again: the steps and dense shards it finished are kept when the
plan (corpora, encoder, index type, shard size) is unchanged and their files still match the
checksums state.json recorded (a shard that does not is encoded again; a document store that does
not starts the build afresh). `repair=True` (`rankline index ... --repair`) rebuilds only the damaged
files: the document store from the corpora, damaged dense shards by encoding their documents again
(with the batch size they were first encoded with, so the bytes come out the same), the FAISS index
from the shards, the Lucene index from the document store; every other file is kept.

Dense shards are encoded in this process or, with `workers` > 1 or `gpus_per_worker` > 0, over a pool
of Ray actors on the running Ray (rankline.retrieval.encode_pool: one shard per job, the same batching,
so the same embeddings); either way each shard is written and its checksum recorded in state.json as it
comes back, so an interrupted build resumes the same way, and a crashed worker costs only the shard it held.

Bad options fail before anything is written (index type and FAISS factory string, encoder, device,
sizes, threads, workers); a corpus that fails to load (duplicate id, bad line, empty) leaves nothing behind;
any later failure or interruption leaves .build/ for the same command to resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from rankline.formats import atomic_write
from rankline.retrieval.corpus import CorpusSource, doc_contents, file_sha256, iter_docs
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.encode_pool import EncodePool, encode_in_process
from rankline.retrieval.encoder import DEFAULT_ENCODER, Encoder, check_device, check_encoder_name, load_encoder
from rankline.retrieval.manifest import MANIFEST, Manifest, checksums

BM25_CONTENTS = "title + ' ' + text (pyserini BEIR 'flat')"
BM25_ANALYZER = "Lucene English (Porter stemmer, stopwords)"
WORK = ".build"
SHARDS = "dense-shards"
_GENERATION_FILE = re.compile(r"docs-\d+\.sqlite|dense-\d+\.faiss|bm25-\d+")
_LUCENE_ARGS = ["-storePositions", "-storeDocvectors", "-storeRaw"]  # as pyserini's BEIR flat indexes
_DENSE_META = ("encoder", "encoder_sha256", "dim", "normalize", "index_type", "factory", "shard_size")


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
    workers: int = 1  # > 1: encode over that many Ray actors (rankline.retrieval.encode_pool), else in this process
    gpus_per_worker: float = 0.0  # > 0: on Ray actors (even one) with that many GPUs each, encoding on cuda


@dataclass(frozen=True)
class BuildReport:
    folder: Path
    count: int
    added: int
    built: tuple[str, ...]  # what this run wrote ("dense", "bm25"; with repair also "docstore", "dense shards"); empty when up to date
    resumed: bool
    repaired: tuple[str, ...] = ()  # with repair: the damaged files, relative to the folder


def check_options(options: BuildOptions) -> None:
    """Raise ValueError/OSError for options that cannot work, before anything is read, loaded or written."""
    if not options.dense and not options.bm25:
        raise ValueError("nothing to build: choose --dense and/or --bm25")
    for flag, value in (("--batch-size", options.batch_size), ("--shard-size", options.shard_size), ("--threads", options.threads),
                        ("--workers", options.workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    gpus = options.gpus_per_worker
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0:
        raise ValueError(f"--gpus-per-worker must be a number >= 0, got {gpus!r}")
    if on_ray(options) and not options.dense:
        raise ValueError("--workers and --gpus-per-worker spread dense encoding over Ray actors; with --bm25 only there is "
                         "nothing to encode (Lucene indexing uses --threads)")
    if gpus and options.device is not None:
        raise ValueError(f"--gpus-per-worker runs every worker's encoder on its GPU (cuda); leave out --device {options.device}")
    if options.index_type is not None and options.dense:
        from rankline.retrieval import faiss_index

        faiss_index.check_index_type(options.index_type)  # against the encoder's dimension once it is loaded
    if options.encoder is not None:
        check_encoder_name(options.encoder)
    check_device(options.device)


def on_ray(options: BuildOptions) -> bool:
    """Whether `options` encode over Ray actors (more than one worker, or GPUs per worker) instead of in this process."""
    return options.workers > 1 or options.gpus_per_worker > 0


def build_index(corpora: Sequence[str | os.PathLike], out: str | os.PathLike, options: BuildOptions = BuildOptions(),
                *, add: bool = False, repair: bool = False) -> BuildReport:
    """Index `corpora` into the folder `out`, bring an existing index up to date, or repair it.

    - `out` has no index: build one over all corpora.
    - `out` indexes exactly these corpora: build only the requested kinds it lacks (else nothing).
    - `out` indexes other corpora: with `add`, append the new corpora's documents to every kind it
      has (and build requested kinds it lacks over all documents); without `add`, refuse.
    - `repair`: rebuild only the files of `out` that fail their checksums (see the module docstring).

    Except with `repair`, an index whose files fail their checksums is refused with a ValueError that
    names the file and gives the repair command.
    """
    check_options(options)
    if add and repair:
        raise ValueError("--add and --repair do not combine: repair the index first, then add to it")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: --out must be a folder")
    current = Manifest.read(folder) if (folder / MANIFEST).exists() else None
    sources = [CorpusSource.of(c) for c in corpora]
    if not sources:
        raise ValueError("no corpus given")
    if repair:
        return _repair(folder, current, sources, options)
    if current is not None:
        current.verify(folder)  # never extend, copy or call up to date an index that does not verify
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
    plan = _plan(current, new_sources, todo, encoder, options)  # checks the index type against the encoder
    created = not folder.exists()
    work = folder / WORK
    resumed, state = _open_work(work, plan)

    base_count = current.count if current else 0
    if not state.get("docstore"):
        with _discard_on_failure(work, folder, created):  # a corpus that does not load leaves nothing
            counts = _build_docstore(work, state, current, folder, new_sources)
        _save_state(work, state, docstore=True, source_counts=counts)
    append_dense = bool(current and current.dense)
    with DocStore(work / "docs.sqlite") as store:
        count = len(store)
        spec = dict(plan.get("dense") or {})
        if "dense" in todo:
            if not append_dense:
                spec["factory"] = _sized_factory(spec["index_type"], count, encoder.dim, work, folder, created)
            ranges = [(s, min(spec["shard_size"], count - s), options.batch_size)
                      for s in range(base_count if append_dense else 0, count, spec["shard_size"])]
            if not state.get("dense"):
                _build_dense(work, state, store, ranges, encoder, spec, current if append_dense else None, folder, options)
                _save_state(work, state, dense=True)
        if "bm25" in todo and not state.get("bm25"):
            append = bool(current and current.bm25)
            _build_bm25(work, state, store, base_count if append else 0, count, current if append else None, folder, options)
            _save_state(work, state, bm25=True)

    if "dense" in todo:
        meta = {k: spec[k] for k in _DENSE_META}
        shards = (current.shards() if append_dense else []) + [_shard_entry(state, start) for start, _, _ in ranges]
    elif current and current.dense:
        meta, shards = _dense_meta(current), current.shards()
    else:
        meta, shards = None, []
    sources_out = list(current.sources) if current else []
    sources_out += [{**asdict(s), "count": n} for s, n in zip(new_sources, state.get("source_counts", []))]
    _commit(folder, work, state, current, generation=plan["base_generation"] + 1, sources=sources_out, count=count,
            dense_meta=meta, shards=shards, bm25=has["bm25"] or "bm25" in todo)
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
    from rankline.retrieval import faiss_index

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
            faiss_index.check_index_type(options.index_type or "flat", encoder.dim)
            plan["dense"] = {"index_type": options.index_type or "flat", "factory": None, "normalize": options.normalize}
        plan["dense"].update(encoder=encoder.name, encoder_sha256=encoder.weights_sha256, dim=encoder.dim,
                             shard_size=options.shard_size)
    return plan


def _sized_factory(index_type: str, count: int, dim: int, work: Path, folder: Path, created: bool) -> str:
    """The factory string for `count` documents, checked to be trainable on them before any encoding."""
    from rankline.retrieval import faiss_index

    factory = faiss_index.factory_string(index_type, count, dim)
    with _discard_on_failure(work, folder, created):
        faiss_index.check_trainable(factory, dim, count)
    return factory


def _open_work(work: Path, plan: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(True, its state) when `work` holds an interrupted run of the same plan whose finished files
    still verify (files that do not are dropped from the state, to be written again); else
    (False, a fresh state) after clearing `work`."""
    state_path = work / "state.json"
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            state = None
        if isinstance(state, dict) and state.get("plan") == plan and _verify_work(work, state):
            _write_json(state_path, state)
            return True, state
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    state = {"plan": plan, "files": {}, "shards": {}}
    _write_json(state_path, state)
    return False, state


def _verify_work(work: Path, state: dict[str, Any]) -> bool:
    """Check every file an interrupted run recorded; False when the document store fails (everything
    after it was built from it), else drop what fails so it is built again."""
    files, shards = state.setdefault("files", {}), state.setdefault("shards", {})
    bad = {rel for rel, sha in files.items() if not _file_ok(work / rel, sha)}
    if "docs.sqlite" in bad:
        return False
    for rel in bad:
        del files[rel]
        if rel.startswith(SHARDS + "/"):
            shards.pop(str(int(Path(rel).stem)), None)
    if any(rel.startswith(SHARDS + "/") or rel == "dense.faiss" for rel in bad):
        state["dense"] = False  # the FAISS index is built from the shards: build it again
        files.pop("dense.faiss", None)
    if any(rel.startswith("bm25/") for rel in bad):
        state["bm25"] = False
        for rel in [r for r in files if r.startswith("bm25/")]:
            del files[rel]
    return True


def _file_ok(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and file_sha256(path) == sha256
    except OSError:
        return False


@contextlib.contextmanager
def _discard_on_failure(work: Path, folder: Path, created: bool) -> Iterator[None]:
    """On any failure inside, remove `work` (and `folder`, when this run created it and it is empty)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _save_state(work: Path, state: dict[str, Any], **done: Any) -> None:
    state.update(done)
    _write_json(work / "state.json", state)


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2)


def _build_docstore(work: Path, state: dict[str, Any], current: Manifest | None, folder: Path,
                    new_sources: list[CorpusSource]) -> list[int]:
    """Write the store of the new generation (the current documents, checked against the manifest as
    copied, then the new ones); returns how many documents each new corpus brought."""
    path = work / "docs.sqlite"
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if current:
        shutil.copyfile(folder / current.docstore, tmp)
        if file_sha256(tmp) != current.files[current.docstore]:
            tmp.unlink()
            raise current.damage_error(folder, current.docstore, "checksum mismatch: the file is truncated or corrupted")
    with DocStore(tmp, writable=True) as store:
        counts = [store.append(iter_docs(source.path), source=source.path) for source in new_sources]
    os.replace(tmp, path)
    state["files"]["docs.sqlite"] = file_sha256(path)
    return counts


def _shard_rel(start: int) -> str:
    return f"{SHARDS}/{start:012d}.npy"


def _shard_entry(state: dict[str, Any], start: int) -> dict[str, Any]:
    info = state["shards"][str(start)]
    return {"file": _shard_rel(start), "start": start, "rows": info["rows"], "batch_size": info["batch_size"]}


def _load_shard(path: Path, sha256: str, rows: int, dim: int) -> np.ndarray | None:
    """The embeddings in `path` when its bytes hash to `sha256` and hold `rows` x `dim` floats, else None."""
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        emb = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return emb if emb.shape == (rows, dim) and emb.dtype == np.float32 else None


def _encode_shards(work: Path, state: dict[str, Any], store: DocStore, ranges: list[tuple[int, int, int]], encoder: Encoder,
                   normalize: bool, options: BuildOptions) -> dict[int, np.ndarray]:
    """Embeddings of the documents in `ranges` ((start, rows, batch size) each), one shard file per
    range under work/dense-shards/: a shard an interrupted run finished is reused when it matches the
    checksum it was written with, every other one is encoded, in this process or over Ray actors
    (`on_ray(options)`), and written as soon as it is done."""
    (work / SHARDS).mkdir(exist_ok=True)
    files = state["files"]
    out: dict[int, np.ndarray] = {}
    for start, rows, _ in ranges:
        rel = _shard_rel(start)
        if rel in files and (emb := _load_shard(work / rel, files[rel], rows, encoder.dim)) is not None:
            out[start] = emb
    todo = [r for r in ranges if r[0] not in out]

    def texts(start: int, rows: int) -> list[str]:
        return [doc_contents(d) for d in store.iter_range(start, start + rows)]

    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=sum(r[1] for r in ranges), initial=sum(r[1] for r in ranges if r[0] in out),
                                       desc="encode", unit="doc", disable=not options.progress))
        if todo and on_ray(options):
            pool = stack.enter_context(EncodePool(encoder, workers=options.workers, gpus_per_worker=options.gpus_per_worker,
                                                  device=options.device))
            encoded = pool.encode(todo, texts, normalize, bar)
        else:
            encoded = encode_in_process(encoder, todo, texts, normalize, bar)
        for (start, rows, batch_size), emb in encoded:
            _write_shard(work, state, start, rows, batch_size, emb)
            out[start] = emb
    return out


def _write_shard(work: Path, state: dict[str, Any], start: int, rows: int, batch_size: int, emb: np.ndarray) -> None:
    """Write one shard's file atomically and record its checksum in state.json: the unit of resume."""
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    with atomic_write(work / _shard_rel(start), "wb") as fh:
        fh.write(buf.getvalue())
    state["files"][_shard_rel(start)] = hashlib.sha256(buf.getvalue()).hexdigest()
    state["shards"][str(start)] = {"rows": rows, "batch_size": batch_size}
    _write_json(work / "state.json", state)


def _stack(arrays: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty((0, dim), np.float32)


def _build_dense(work: Path, state: dict[str, Any], store: DocStore, ranges: list[tuple[int, int, int]], encoder: Encoder,
                 spec: dict[str, Any], base: Manifest | None, folder: Path, options: BuildOptions) -> None:
    """Encode `ranges` into shards and write work/dense.faiss: `base`'s FAISS index (verified with the
    rest of the index) with the new rows appended, or, without `base`, a new one over them."""
    from rankline.retrieval import faiss_index

    shards = _encode_shards(work, state, store, ranges, encoder, spec["normalize"], options)
    embeddings = _stack([shards[start] for start, _, _ in ranges], encoder.dim)
    if base is not None:
        index = faiss_index.read(folder / base.dense["file"])
        if index.ntotal != base.count:
            raise base.damage_error(folder, base.dense["file"], f"holds {index.ntotal} vectors, the index {base.count} documents")
        index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    else:
        index = faiss_index.build(embeddings, spec["factory"])
    _write_faiss(work, state, index)


def _write_faiss(work: Path, state: dict[str, Any], index: Any) -> None:
    from rankline.retrieval import faiss_index

    tmp = work / "dense.faiss.tmp"
    faiss_index.write(index, tmp)
    state["files"]["dense.faiss"] = file_sha256(tmp)
    os.replace(tmp, work / "dense.faiss")


def _build_bm25(work: Path, state: dict[str, Any], store: DocStore, lo: int, count: int, base: Manifest | None, folder: Path,
                options: BuildOptions) -> None:
    """Write work/bm25: `base`'s Lucene index (checked against its manifest as copied) with documents
    lo..count-1 appended, or, without `base`, a new one over them."""
    from rankline.retrieval.lucene_env import pyserini_lucene

    target = work / "bm25"
    shutil.rmtree(target, ignore_errors=True)
    for rel in [r for r in state["files"] if r.startswith("bm25/")]:
        del state["files"][rel]
    if base is not None:
        prefix = base.bm25["dir"] + "/"
        shutil.copytree(folder / base.bm25["dir"], target)
        for rel, sha in base.files.items():
            if rel.startswith(prefix) and not _file_ok(target / rel[len(prefix):], sha):
                shutil.rmtree(target, ignore_errors=True)
                raise base.damage_error(folder, rel, "checksum mismatch: the file is truncated or corrupted")
    indexer = pyserini_lucene().LuceneIndexer(args=["-index", str(target), *_LUCENE_ARGS], append=base is not None,
                                              threads=options.threads)
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
    state["files"].update(checksums(work, ["bm25"]))


def _dense_meta(manifest: Manifest) -> dict[str, Any]:
    meta = {k: v for k, v in manifest.dense.items() if k not in ("file", "shards", "count", "metric")}
    meta.setdefault("shard_size", BuildOptions.shard_size)
    return meta


def _commit(folder: Path, work: Path, state: dict[str, Any], current: Manifest | None, *, generation: int,
            sources: list[dict[str, Any]], count: int, dense_meta: dict[str, Any] | None, shards: list[dict[str, Any]],
            bm25: bool) -> Manifest:
    """Move what this run wrote (the files state.json lists) to their generation names, carry the
    rest over from `current`, and write the manifest: the commit. Checksums are those recorded when
    each file was written, or `current`'s (verified at the start of the run) for a file carried over."""
    made = state["files"]
    files: dict[str, str] = {}

    def carry(rel: str) -> str:
        files[rel] = current.files[rel]
        return rel

    if "docs.sqlite" in made:
        docstore = f"docs-{generation}.sqlite"
        os.replace(work / "docs.sqlite", folder / docstore)
        files[docstore] = made["docs.sqlite"]
    else:
        docstore = carry(current.docstore)
    dense = None
    if dense_meta is not None:
        if "dense.faiss" in made:
            dense_file = f"dense-{generation}.faiss"
            os.replace(work / "dense.faiss", folder / dense_file)
            files[dense_file] = made["dense.faiss"]
        else:
            dense_file = carry(current.dense["file"])
        if shards:
            (folder / SHARDS).mkdir(exist_ok=True)
        for entry in shards:
            if entry["file"] in made:  # work/dense-shards/X.npy -> DIR/dense-shards/X.npy
                os.replace(work / entry["file"], folder / entry["file"])
                files[entry["file"]] = made[entry["file"]]
            else:
                carry(entry["file"])
        dense = {**dense_meta, "file": dense_file, "metric": "inner_product", "count": count, "shards": shards}
    bm25_meta = None
    if bm25:
        new = {rel: sha for rel, sha in made.items() if rel.startswith("bm25/")}
        if new:
            bm25_meta = {"dir": f"bm25-{generation}", "contents": BM25_CONTENTS, "analyzer": BM25_ANALYZER, "count": count}
            shutil.rmtree(folder / bm25_meta["dir"], ignore_errors=True)
            os.replace(work / "bm25", folder / bm25_meta["dir"])
            files.update({bm25_meta["dir"] + rel[len("bm25"):]: sha for rel, sha in new.items()})
        else:
            bm25_meta = dict(current.bm25)
            for rel in current.files:
                if rel.startswith(bm25_meta["dir"] + "/"):
                    carry(rel)
    manifest = Manifest(generation=generation, count=count, sources=sources, docstore=docstore, files=files,
                        dense=dense, bm25=bm25_meta)
    manifest.write(folder)
    keep = {docstore} | ({dense["file"]} if dense else set()) | ({bm25_meta["dir"]} if bm25_meta else set())
    for path in folder.iterdir():  # files of older generations (or of a commit interrupted before its manifest)
        if path.name not in keep and _GENERATION_FILE.fullmatch(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if (folder / SHARDS).is_dir():
        listed = {Path(s["file"]).name for s in shards}
        for path in (folder / SHARDS).iterdir():
            if path.name not in listed:
                path.unlink()
        if not listed:
            (folder / SHARDS).rmdir()
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _repair(folder: Path, current: Manifest | None, sources: list[CorpusSource], options: BuildOptions) -> BuildReport:
    """Rebuild the files of the index in `folder` that fail their checksums, and only those."""
    from rankline.retrieval import faiss_index

    if current is None:
        raise FileNotFoundError(f"{folder}: no index to repair (no {MANIFEST}); build one with `rankline index CORPUS --out {folder}`")
    indexed = {s["sha256"]: s for s in current.sources}
    given = {s.sha256: s for s in sources}
    for source in sources:
        if source.sha256 not in indexed:
            raise ValueError(f"{source.path}: not a corpus of the index in {folder} (it indexes "
                             f"{', '.join(s['path'] for s in current.sources)}); --repair rebuilds from those, "
                             "add new corpora with --add once the index verifies")
    damaged = current.damaged(folder)
    if not damaged:
        return BuildReport(folder, current.count, 0, (), False)
    bad = {rel for rel, _ in damaged}
    parts = {current.part_of(rel) for rel in bad}
    if "docstore" in parts:
        missing = [s["path"] for s in current.sources if s["sha256"] not in given]
        if missing:
            raise ValueError(f"{folder / current.docstore} is damaged and is rebuilt from the corpora: give all of them "
                             f"(missing {', '.join(missing)}, or a corpus file whose bytes changed since it was indexed)")

    shards = current.shards()
    redo: list[tuple[int, int, int]] = []
    if current.dense is not None:
        shard_size = current.dense.get("shard_size", options.shard_size)
        redo = [(s["start"], s["rows"], s.get("batch_size", options.batch_size)) for s in shards if s["file"] in bad]
        if "dense" in parts:  # the FAISS index is rebuilt from shards covering every document
            redo += [(lo, rows, options.batch_size) for lo, rows in _uncovered(shards, current.count, shard_size)]
    encoder = _encoder_for(current, options) if redo else None
    plan = {"repair": sorted(bad), "base_generation": current.generation, "sources": sorted(indexed),
            "encoder_sha256": encoder.weights_sha256 if encoder else None}
    work = folder / WORK
    resumed, state = _open_work(work, plan)

    if "docstore" in parts and not state.get("docstore"):
        counts = _build_docstore(work, state, None, folder, [given[s["sha256"]] for s in current.sources])
        if counts != [s["count"] for s in current.sources]:
            raise ValueError(f"the corpora now give {counts} documents, the index was built from {[s['count'] for s in current.sources]}")
        _save_state(work, state, docstore=True)
    with DocStore(work / "docs.sqlite" if "docstore" in parts else folder / current.docstore) as store:
        if len(store) != current.count:
            raise ValueError(f"{store.path}: holds {len(store)} documents, the manifest {current.count}")
        built = ["docstore"] if "docstore" in parts else []
        if redo or "dense" in parts:
            if not state.get("dense"):
                fresh = _encode_shards(work, state, store, redo, encoder, current.dense["normalize"], options) if redo else {}
                if "dense" in parts:
                    dim, arrays = current.dense["dim"], []
                    for entry in _repaired_shards(shards, redo, state):
                        emb = fresh.get(entry["start"])
                        if emb is None:
                            emb = _load_shard(folder / entry["file"], current.files[entry["file"]], entry["rows"], dim)
                        if emb is None:
                            raise current.damage_error(folder, entry["file"], "changed during the repair")
                        arrays.append(emb)
                    _write_faiss(work, state, faiss_index.build(_stack(arrays, dim), current.dense["factory"]))
                _save_state(work, state, dense=True)
            built += (["dense shards"] if redo else []) + (["dense"] if "dense" in parts else [])
        if "bm25" in parts:
            if not state.get("bm25"):
                _build_bm25(work, state, store, 0, current.count, None, folder, options)
                _save_state(work, state, bm25=True)
            built.append("bm25")

    if current.dense is not None:
        shards = _repaired_shards(shards, redo, state)
    sources_out = [{**s, "path": given[s["sha256"]].path} if s["sha256"] in given else s for s in current.sources]
    manifest = _commit(folder, work, state, current, generation=current.generation + 1, sources=sources_out, count=current.count,
                       dense_meta=_dense_meta(current) if current.dense else None, shards=shards, bm25=current.bm25 is not None)
    manifest.verify(folder)
    return BuildReport(folder, current.count, 0, tuple(built), resumed, tuple(sorted(bad)))


def _repaired_shards(shards: list[dict[str, Any]], redo: list[tuple[int, int, int]], state: dict[str, Any]) -> list[dict[str, Any]]:
    """The shard list after a repair: the entries of `shards`, those encoded again (`redo`) replaced
    by their new entries, and the new ones covering what no shard covered; by start."""
    entries = {s["start"]: s for s in shards}
    entries.update({lo: _shard_entry(state, lo) for lo, _, _ in redo})
    return [entries[lo] for lo in sorted(entries)]


def _uncovered(shards: list[dict[str, Any]], count: int, shard_size: int) -> list[tuple[int, int]]:
    """(start, rows) of shard-size pieces of 0..count-1 that no shard covers (an index built before
    shards were kept has none)."""
    out, pos = [], 0
    for s in sorted(shards, key=lambda e: e["start"]) + [{"start": count, "rows": 0}]:
        for lo in range(pos, s["start"], shard_size):
            out.append((lo, min(shard_size, s["start"] - lo)))
        pos = max(pos, s["start"] + s["rows"])
    return out
