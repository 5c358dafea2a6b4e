"""File plumbing shared by every reader and writer: text input that is checked as it is read (UTF-8,
a leading byte-order mark dropped, gzip data recognised by its magic bytes), errors that point at a
line, atomic writes (temporary file in the target's folder, then rename), and the cache of derived
model files (built once under a lock, into a temporary folder renamed into place).

Every failure names the file the user gave: a folder or a missing file where a file is read, bytes
that are not UTF-8 (with the line), gzip data that is cut short or corrupt, and, when writing, the
target itself (never the hidden temporary file beside it)."""
from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# What reading a damaged file raises: undecodable bytes, gzip data cut short (EOFError) or corrupt
# (zlib.error, gzip.BadGzipFile, an OSError), and plain read errors.
_READ_ERRORS = (UnicodeDecodeError, EOFError, zlib.error, OSError)
# Errors of a write that name no file but are the target's: the disk or the quota is full, ...
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class FormatError(ValueError):
    """A malformed input line: names the file, the line number and what was expected."""

    def __init__(self, path: str | os.PathLike, line_no: int | None, message: str):
        self.path, self.line_no = str(path), line_no
        where = f"{self.path}:{line_no}" if line_no is not None else self.path
        super().__init__(f"{where}: {message}")


class TextReader:
    """A text file open for reading (what `open_text` returns): iterate it, `read()` or `readline()`
    it as any text file. A read that fails raises a FormatError (or an OSError) that names the file and,
    where it can be known, the line, instead of a bare UnicodeDecodeError, EOFError or zlib.error."""

    def __init__(self, path: Path, text: io.TextIOWrapper, raw: IO[bytes], gz: bool):
        self.path, self._text, self._raw, self.gz = path, text, raw, gz
        self.name = str(path)

    def __iter__(self) -> Iterator[str]:
        return self._lines()

    def _lines(self) -> Iterator[str]:
        try:
            yield from self._text
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def __next__(self) -> str:
        try:
            return next(self._text)
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def read(self, size: int = -1) -> str:
        try:
            return self._text.read(size)
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def readline(self, size: int = -1) -> str:
        try:
            return self._text.readline(size)
        except _READ_ERRORS as exc:
            raise self._error(exc) from None

    def readlines(self) -> list[str]:
        return list(self)

    def __getattr__(self, name: str):  # the rest of the text file's interface (encoding, buffer, ...)
        return getattr(self._text, name)

    @property
    def closed(self) -> bool:
        return self._text.closed

    def close(self) -> None:
        try:
            self._text.close()
        finally:
            self._raw.close()

    def __enter__(self) -> "TextReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: BaseException) -> Exception:
        if isinstance(exc, UnicodeDecodeError):
            line_no, detail = _undecodable_line(self.path, self.gz)
            return FormatError(self.path, line_no, f"not UTF-8 text ({detail}); expected a UTF-8 text file")
        if self.gz and isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
            lines = _gzip_complete_lines(self.path)
            where = f", after {lines} complete line(s)" if lines is not None else ""
            return FormatError(self.path, None, f"the gzip data is truncated or corrupt{where} ({exc})")
        if isinstance(exc, OSError):
            return type(exc)(f"{self.path}: cannot read: {exc.strerror or exc}")
        return FormatError(self.path, None, str(exc))


def open_text(path: str | os.PathLike) -> TextReader:
    """Open a text file for reading as UTF-8, dropping a leading byte-order mark, and gunzipping it
    when it holds gzip data (a name ending in .gz must). A folder, a missing file or a .gz that is not
    gzip is refused at once; damage found while reading is reported with the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected a file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise type(exc)(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        magic = raw.peek(2)[:2]
        gz = magic == _GZIP_MAGIC
        if not gz and path.name.lower().endswith(".gz"):
            raise FormatError(path, None, "expected gzip data (the name ends in .gz), but the file "
                              + ("is empty" if not magic else "does not start with gzip's magic bytes"))
        binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        text = io.TextIOWrapper(binary, encoding="utf-8-sig")  # type: ignore[arg-type]
    except BaseException:
        raw.close()
        raise
    return TextReader(path, text, raw, gz)


def _binary_lines(path: Path, gz: bool) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        yield from (gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw)


def _undecodable_line(path: Path, gz: bool) -> tuple[int | None, str]:
    """The line holding the first byte that is not UTF-8, and what is wrong there (the file is read
    again: the decoder reports a position in a block, not a line)."""
    try:
        for line_no, line in enumerate(_binary_lines(path, gz), 1):
            if line_no == 1:
                if line.startswith(_UTF16_BOMS):
                    return 1, "it starts with a UTF-16 byte-order mark; save it as UTF-8"
                line = line.removeprefix(_UTF8_BOM)
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return line_no, f"byte 0x{line[exc.start]:02x} at byte {exc.start + 1} of the line: {exc.reason}"
    except (OSError, EOFError, zlib.error):
        pass
    return None, "undecodable bytes"


def _gzip_complete_lines(path: Path) -> int | None:
    """How many lines of a damaged gzip file decompress before the damage (None if unreadable)."""
    lines = 0
    try:
        with open(path, "rb") as raw:
            stream = zlib.decompressobj(wbits=31)
            while chunk := raw.read(256):  # small pieces: a corrupt one loses little of what it held
                while chunk:
                    lines += stream.decompress(chunk).count(b"\n")
                    chunk = b""
                    if stream.eof:  # a file may hold several gzip members
                        chunk, stream = stream.unused_data, zlib.decompressobj(wbits=31)
    except zlib.error:
        pass
    except OSError:
        return None
    return lines


def check_output(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder, or a folder path
    through a file. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected a file name to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{path}: cannot write: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"{path}: cannot write: the folder {parent} is not writable")
            break
    return path


def _cannot_write(path: Path, exc: OSError) -> OSError:
    return type(exc)(f"{path}: cannot write: {exc.strerror or exc}")


def _new_file_mode() -> int:
    """The mode a plain open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Write `path` all at once: the content goes to a temporary file beside it, which replaces
    `path` only when the block finishes without an exception (gzip-compressed for a .gz name). An
    error of the write itself names `path`, not the temporary file."""
    path = check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (exc.errno in _WRITE_ERRNOS or exc.filename == tmp):
            raise _cannot_write(path, exc) from None
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
