"""What the search endpoint does at its door, before a request reaches a stage, kept apart from Ray
so that it reads (and tests) as plain HTTP:

- `Door`, an ASGI middleware that counts every answer by path and status (a client that went away
  before its answer is counted as status 499, not as a server error), asks for an API key where the
  service has them, and refuses a body above `max_body_bytes` with 413, whether the client declared
  its length (checked before anything is read) or sent it in chunks (counted as it arrives);
- `ApiKeys`: the keys of an `api_keys_file`, held as SHA-256 digests and compared in constant time;
- `clean_query`: a query's text NFC-normalised, or a ValueError naming the first character that is
  not text (a lone UTF-16 surrogate, a control character other than tab, line feed or carriage
  return);
- `docs_page`: the API description as one self-contained HTML page (no script, style sheet or font
  from elsewhere, so it shows on a machine without internet, unlike FastAPI's Swagger UI).
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from rankline.formats import open_text

# Message = dict[str, Any]; Receive / Send: the ASGI callables
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

CLIENT_GONE = "499"  # the status /metrics counts for a request whose client disconnected before its answer
ALLOWED_CONTROLS = frozenset("\t\n\r")


def clean_query(text: str) -> str:
    """`text` in NFC; ValueError (saying which character, where) for what is not text."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"query holds a lone UTF-16 surrogate U+{ord(ch):04X} at character {i + 1}, "
                             "which is not valid Unicode text")
        if unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROLS:
            raise ValueError(f"query holds the control character U+{ord(ch):04X} at character {i + 1}; "
                             "only tab, line feed and carriage return are allowed")
    return unicodedata.normalize("NFC", text)


def printable(message: str, limit: int = 300) -> str:
    """`message` safe to put in a JSON answer or a log line: lone surrogates escaped, cut at `limit`."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message if len(message) <= limit else message[: limit - 3] + "..."


@dataclass(frozen=True)
class ApiKeys:
    """SHA-256 digests of the accepted keys: the keys themselves never leave the process that read
    the file (a Serve replica receives the digests), and are never logged."""

    digests: tuple[bytes, ...]

    @classmethod
    def read(cls, path: str | Path) -> "ApiKeys":
        """One key per line; blank lines and lines starting with # are skipped. A key is printable
        ASCII without spaces (what an Authorization header carries); errors name the line, never the key."""
        digests = []
        with open_text(path) as fh:  # errors name the file (and the line of a byte that is not UTF-8)
            for number, line in enumerate(fh, 1):
                key = line.strip()
                if not key or key.startswith("#"):
                    continue
                if not key.isascii() or not key.isprintable() or " " in key:
                    raise ValueError(f"{path}:{number}: an API key must be printable ASCII without spaces")
                digests.append(hashlib.sha256(key.encode("ascii")).digest())
        if not digests:
            raise ValueError(f"{path}: no API keys in it (expected one key per line)")
        return cls(tuple(digests))

    def accepts(self, authorization: bytes | None) -> bool:
        """Whether an `Authorization: Bearer KEY` header value carries one of the keys. Every digest
        is compared (hmac.compare_digest), whichever matches, so the time taken tells nothing."""
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        digest = hashlib.sha256(token).digest()
        found = False
        for known in self.digests:
            found |= hmac.compare_digest(known, digest)
        return found


def route_path(scope: dict) -> str:
    """The request's path inside the app (without the route prefix the app is mounted at)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def send_json(send: Send, status: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


class Door:
    """ASGI middleware, outermost in the app: count, then API key, then body size, then the app.

    count(app, path, status, seconds) is called once per HTTP request, `path` one of `routes` or
    "other" (bounded label values), status "499" when the client went away before its answer.
    Paths in `open_paths` need no key."""

    def __init__(self, app: Any, *, count: Callable[[Any, str, str, float], None], keys: ApiKeys | None,
                 open_paths: frozenset[str], routes: frozenset[str], max_body_bytes: int):
        self.app, self.count, self.keys = app, count, keys
        self.open_paths, self.routes, self.max_body_bytes = open_paths, routes, max_body_bytes

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        label = path if path in self.routes else "other"
        seen: dict[str, Any] = {"status": None, "done": False}
        start = time.perf_counter()

        async def watched_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                seen["done"] = True

        def status() -> str:
            return str(seen["status"]) if seen["done"] else CLIENT_GONE

        try:
            await self._admit(scope, receive, watched_send, path)
        except Exception:
            # an answer already sent stands; otherwise Starlette's error middleware answers 500
            self.count(scope.get("app"), label, str(seen["status"]) if seen["done"] else "500",
                       time.perf_counter() - start)
            raise
        except BaseException:  # cancelled: the client went away (Serve cancels the request)
            self.count(scope.get("app"), label, status(), time.perf_counter() - start)
            raise
        self.count(scope.get("app"), label, status(), time.perf_counter() - start)

    async def _admit(self, scope: dict, receive: Receive, send: Send, path: str) -> None:
        if self.keys is not None and path not in self.open_paths:
            given = header(scope, b"authorization")
            if not self.keys.accepts(given):
                challenge = b'Bearer realm="rankline"' + (b', error="invalid_token"' if given else b"")
                why = "the API key is not valid" if given else "this service needs an API key"
                await send_json(send, 401, {"detail": f"{why}: send Authorization: Bearer KEY"},
                                ((b"www-authenticate", challenge),))
                return
        if scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"detail": "the Content-Length header is not a number"})
                return
            if int(declared) > self.max_body_bytes:
                await send_json(send, 413, {"detail": self._too_large(f"{int(declared)} bytes")})
                return
        body = await self._read_body(receive)
        if body is None:  # the client went away while sending
            return
        if len(body) > self.max_body_bytes:
            await send_json(send, 413, {"detail": self._too_large("more")})
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, size: str) -> str:
        return f"the request body is larger than the limit of {self.max_body_bytes} bytes ({size})"

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or as much as shows it is above the limit, or None on a disconnect."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes or not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits on the client (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed


def docs_page(schema: dict) -> str:
    """The OpenAPI `schema` as one HTML page that needs nothing from anywhere else: each operation
    with its request body and every answer (status, meaning, body schema), then every schema."""
    esc = html.escape
    title = esc(schema.get("info", {}).get("title", "API"))
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "pre{background:#f4f4f4;padding:.6em;overflow:auto}td,th{text-align:left;padding:.2em .8em;"
             "vertical-align:top}code{background:#f4f4f4}</style></head><body>",
             f"<h1>{title} {esc(str(schema.get('info', {}).get('version', '')))}</h1>",
             '<p>The machine-readable description: <a href="openapi.json">openapi.json</a>.</p>']
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            parts.append(f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2>")
            for key in ("summary", "description"):
                if op.get(key):
                    parts.append(f"<p>{esc(op[key])}</p>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                parts.append(f"<p>Request body ({esc(media)}): {_schema_name(content.get('schema', {}))}</p>")
            rows = []
            for status, answer in op.get("responses", {}).items():
                media = answer.get("content", {})
                shapes = ", ".join(_schema_name(c.get("schema", {})) for c in media.values()) or "-"
                heads = ", ".join(esc(h) for h in answer.get("headers", {})) or ""
                rows.append(f"<tr><td>{esc(status)}</td><td>{esc(answer.get('description', ''))}</td>"
                            f"<td>{shapes}</td><td>{heads}</td></tr>")
            parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th><th>headers</th></tr>"
                         + "".join(rows) + "</table>")
    schemas = schema.get("components", {}).get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        for name, body in schemas.items():
            parts.append(f'<h3 id="{esc(name)}">{esc(name)}</h3><pre>{esc(json.dumps(body, indent=2))}</pre>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _schema_name(schema: dict) -> str:
    ref = schema.get("$ref", "")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#{html.escape(name)}">{html.escape(name)}</a>'
    return f"<code>{html.escape(json.dumps(schema))}</code>"
