"""The search endpoint's door without Ray: query text checked and NFC-normalised, API keys read and
compared, bodies capped, answers counted (a client gone before its answer as 499), a failing member
of a batched stage call failing alone, and a bad api_keys_file one line from `rankline serve`."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal

import pytest

from rankline.pipelines.serve_http import ApiKeys, Door, clean_query

KEY = "s3cret-Key_1"


# -- clean_query --------------------------------------------------------------------------------------

def test_clean_query_normalises_to_nfc():
    assert clean_query("cafe\u0301 \uff21") == "caf\u00e9 \uff21"  # combining accent composed; NFC, not NFKC
    assert clean_query("tab\tline\nreturn\r") == "tab\tline\nreturn\r"


@pytest.mark.parametrize("text, message", [
    ("ray \ud800 serve", "lone UTF-16 surrogate U+D800 at character 5"),
    ("\udfff", "lone UTF-16 surrogate U+DFFF at character 1"),
    ("ray\x00", "control character U+0000 at character 4"),
    ("bell \x07", "control character U+0007"),
    ("c1 \x85", "control character U+0085"),
    ("del \x7f", "control character U+007F"),
])
def test_clean_query_refuses_what_is_not_text(text, message):
    with pytest.raises(ValueError, match="query holds") as err:
        clean_query(text)
    assert message in str(err.value)
    str(err.value).encode("utf-8")  # the message itself is valid text (it can go into a JSON answer)


# -- ApiKeys ------------------------------------------------------------------------------------------

def test_api_keys_file_and_bearer_header(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"# clients\n\n{KEY}\n  other-key  \n")
    keys = ApiKeys.read(path)
    assert keys.digests == tuple(hashlib.sha256(k.encode()).digest() for k in (KEY, "other-key"))
    assert keys.accepts(f"Bearer {KEY}".encode())
    assert keys.accepts(b"bearer other-key")
    for given in (None, b"", b"Bearer", b"Bearer ", f"Basic {KEY}".encode(), f"Bearer {KEY}x".encode(),
                  KEY.encode(), b"Bearer # clients", "Bearer caf\u00e9".encode()):
        assert not keys.accepts(given), given


@pytest.mark.parametrize("content, message", [
    (b"# nothing but a comment\n\n", "keys.txt: no API keys in it"),
    (b"good-key\nbad key\n", "keys.txt:2: an API key must be printable ASCII without spaces"),
    (b"good-key\ncaf\xc3\xa9\n", "keys.txt:2: an API key must be printable ASCII"),
    (b"good-key\n\xff\xfe\n", "keys.txt"),
])
def test_bad_api_keys_file_is_one_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "keys.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        ApiKeys.read(path)
    assert message in str(err.value) and "bad key" not in str(err.value)


def test_bad_api_keys_file_is_one_line_from_rankline_serve(tmp_path, capsys, toy):
    from rankline.pipelines.cli import main

    (tmp_path / "keys.txt").write_text("a key with spaces\n")
    (tmp_path / "pipe.yaml").write_text(
        f'retriever: {{factory: "{toy.__name__}:KeywordRetriever"}}\nserve: {{api_keys_file: keys.txt}}\n')
    (tmp_path / "missing.yaml").write_text(
        f'retriever: {{factory: "{toy.__name__}:KeywordRetriever"}}\nserve: {{api_keys_file: nokeys.txt}}\n')
    handler = signal.getsignal(signal.SIGTERM)
    try:
        for name, expected in (("pipe.yaml", "keys.txt:1: an API key must be printable ASCII without spaces"),
                               ("missing.yaml", "serve.api_keys_file")):
            assert main(["serve", str(tmp_path / name)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.startswith("rankline serve: error: "), err
            assert expected in err and str(tmp_path) in err, err
    finally:
        signal.signal(signal.SIGTERM, handler)


# -- Door ---------------------------------------------------------------------------------------------

class FakeApp:
    """An ASGI app that answers 200 with the body it received, or waits forever, or raises."""

    def __init__(self, behaviour: str = "echo"):
        self.behaviour, self.calls = behaviour, 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "raise":
            raise RuntimeError("boom")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _door(app, keys=None, max_body_bytes=10):
    counted = []
    door = Door(app, count=lambda _app, path, status, _s: counted.append((path, status)), keys=keys,
                open_paths=frozenset({"/health"}), routes=frozenset({"/search", "/health"}),
                max_body_bytes=max_body_bytes)
    return door, counted


def _call(door, path="/search", method="POST", headers=(), chunks=(b"{}",), root_path=""):
    """Drive one request through `door`: (status, headers, body) of its answer; None if it had none."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path,
             "headers": [(k.lower(), v) for k, v in headers]}
    asyncio.run(door(scope, receive, send))
    if not sent:
        return None
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_door_asks_for_an_api_key_except_on_open_paths(tmp_path):
    (tmp_path / "keys.txt").write_text(KEY + "\n")
    app = FakeApp()
    door, counted = _door(app, ApiKeys.read(tmp_path / "keys.txt"))
    status, headers, body = _call(door)
    assert status == 401 and headers[b"www-authenticate"] == b'Bearer realm="rankline"'
    assert b"needs an API key" in body
    status, headers, body = _call(door, headers=[(b"Authorization", b"Bearer wrong")])
    assert status == 401 and headers[b"www-authenticate"] == b'Bearer realm="rankline", error="invalid_token"'
    assert b"not valid" in body and b"wrong" not in body
    assert app.calls == 0
    assert _call(door, headers=[(b"Authorization", f"Bearer {KEY}".encode())])[0] == 200
    assert _call(door, path="/health", method="GET")[0] == 200
    assert _call(door, path="/health", method="GET", root_path="/app")[0] == 200  # mounted under a route prefix
    assert _call(door, path="/search", method="GET")[0] == 401
    assert counted == [("/search", "401"), ("/search", "401"), ("/search", "200"), ("/health", "200"),
                       ("/health", "200"), ("/search", "401")]


def test_door_caps_the_body_declared_or_chunked():
    app = FakeApp()
    door, counted = _door(app, max_body_bytes=10)
    status, _, body = _call(door, headers=[(b"content-length", b"11")], chunks=(b"x" * 11,))
    assert status == 413 and b"limit of 10 bytes (11 bytes)" in body
    status, _, body = _call(door, chunks=(b"x" * 6, b"x" * 5, b"x" * 1000))  # chunked: no content-length
    assert status == 413 and b"limit of 10 bytes" in body
    assert app.calls == 0
    assert _call(door, headers=[(b"content-length", b"a lot")])[0] == 400
    # at the limit, in chunks: the app receives the whole body
    assert _call(door, chunks=(b"0123", b"456789")) == (200, {}, b"0123456789")
    assert _call(door, headers=[(b"content-length", b"10")], chunks=(b"0123456789",))[2] == b"0123456789"
    assert [status for _, status in counted] == ["413", "413", "400", "200", "200"]


def test_door_counts_a_client_gone_as_499_and_a_crash_as_500():
    door, counted = _door(FakeApp("hang"))

    async def go_away():
        task = asyncio.ensure_future(_async_call(door))
        await asyncio.sleep(0.05)
        task.cancel()  # what Serve does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go_away())
    assert counted == [("/search", "499")]
    door, counted = _door(FakeApp("raise"))
    with pytest.raises(RuntimeError):
        _call(door)
    assert counted == [("/search", "500")]
    door, counted = _door(FakeApp())
    assert _call(door, path="/elsewhere", method="GET")[0] == 200
    assert _call(door, chunks=(b"{", b"}"))[0] == 200
    assert counted == [("other", "200"), ("/search", "200")]


async def _async_call(door):
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        pass

    await door({"type": "http", "method": "POST", "path": "/search", "headers": []}, receive, send)


def test_door_client_gone_while_sending_the_body_is_499():
    app = FakeApp()
    door, counted = _door(app, max_body_bytes=100)
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        raise AssertionError("nothing is sent to a client that went away")

    asyncio.run(door({"type": "http", "method": "POST", "path": "/search", "headers": []}, receive, send))
    assert app.calls == 0 and counted == [("/search", "499")]


# -- each_alone ---------------------------------------------------------------------------------------

def _run_words(part):
    """A batched stage: fails as a whole when any item is 'bad' (ValueError) or 'broken' (RuntimeError)."""
    for item in part:
        if item == "bad":
            raise ValueError("cannot take 'bad'")
        if item == "broken":
            raise RuntimeError("stage broke")
    return [item.upper() for item in part]


def test_each_alone_fails_only_the_member_that_fails_alone():
    from rankline.pipelines.serve_app import StageError, each_alone

    assert each_alone(_run_words, ["a", "b"]) == ["A", "B"]
    got = each_alone(_run_words, ["a", "bad", "b", "broken", "c"])
    assert got[0::2] == ["A", "B", "C"]
    assert got[1] == StageError(True, "ValueError: cannot take 'bad'")  # 422
    assert got[3] == StageError(False, "RuntimeError: stage broke")  # 503
    # the answer of a bad member does not depend on what else was in its batch
    assert each_alone(_run_words, ["bad"]) == each_alone(_run_words, ["bad", "bad"])[:1] == [got[1]]
    assert each_alone(_run_words, ["broken"]) == [got[3]]


# -- a local Ray stopped while it starts ----------------------------------------------------------------

@pytest.mark.parametrize("preset", [None, "7"])
def test_a_local_ray_starts_without_a_shutdown_drain(monkeypatch, preset):
    """SIGTERM while `rankline serve` starts its own Ray used to take ~29 s: Ray's 30 s graceful drain.
    While start_local_ray starts the node, the drain is 0 (env var and the constant Ray reads), unless
    the user set one; both are restored afterwards."""
    from ray._private import ray_constants

    from rankline.pipelines.actors import _local_only_ray

    name = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
    if preset is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, preset)
    before = getattr(ray_constants, name)
    with _local_only_ray():
        assert os.environ.get(name) == (preset or "0")
        assert getattr(ray_constants, name) == (before if preset else 0.0)
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert os.environ.get(name) == preset and getattr(ray_constants, name) == before
