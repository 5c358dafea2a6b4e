"""File plumbing shared by every reader and writer: transparent .gz, errors that point at a line,
atomic writes (temporary file in the target's folder, then rename), and the cache of derived model
files (built once under a lock, into a temporary folder renamed into place)."""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


class FormatError(ValueError):
    """A malformed input line: names the file, the line number and what was expected."""

    def __init__(self, path: str | os.PathLike, line_no: int | None, message: str):
        self.path, self.line_no = str(path), line_no
        where = f"{self.path}:{line_no}" if line_no is not None else self.path
        super().__init__(f"{where}: {message}")


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a text file for reading, gunzipping it when its name ends in .gz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _new_file_mode() -> int:
    """The mode a plain open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Write `path` all at once: the content goes to a temporary file beside it, which replaces
    `path` only when the block finishes without an exception (gzip-compressed for a .gz name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.suffix == ".gz":
                with gzip.open(raw, "wb" if binary else "wt", encoding=None if binary else "utf-8") as fh:
                    yield fh
            elif binary:
                yield raw
            else:
                with open(raw.fileno(), "w", encoding="utf-8", closefd=False) as fh:
                    yield fh
        os.chmod(tmp, _new_file_mode())  # mkstemp's 0600 would make every output private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cache_root() -> Path:
    """Where derived model files (converted LLMs, exported encoders) live: $RANKLINE_CACHE, default
    ~/.cache/rankline."""
    return Path(os.environ.get("RANKLINE_CACHE", Path.home() / ".cache" / "rankline")).expanduser()


def cached_folder(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(folder)` on first use. The build holds a file lock and writes into a
    temporary folder that is renamed into place, so concurrent processes never see (or produce) a
    half-written cache; `marker`, a file `build` writes, says the folder is complete."""
    from filelock import FileLock

    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / marker).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
