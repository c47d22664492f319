"""A real HTTP server that speaks the OpenAI chat completions protocol, scripted per test.

``POST /v1/chat/completions`` answers with the next step of the script (or the default
step once the script is used up). ``GET /v1/models`` lists the models asked for so far
(or answers with the error status ``models_status`` when set: 404 as servers that lack
it, 401 as one refusing the key); it is not scripted, and
counted in ``model_lists`` rather than ``requests``. ``stop()`` closes the port (a server
that went away) and ``restart()`` opens it again. A step is a :class:`Reply`, or a function of the
request returning one. Every request is recorded with its arrival time, so a test can
measure the waits between calls. Like a real server, it may refuse a ``response_format``
type (:meth:`FakeOpenAI.refuse`) before any step is taken (the refused request is in
``requests``). Used through the ``fake_openai`` fixture::

    def test_x(fake_openai: FakeOpenAI) -> None:
        fake_openai.script(error(429, headers={"Retry-After": "1"}), answer("hi"))
        ... LLM(base_url=fake_openai.base_url, ...) ...
        assert len(fake_openai.requests) == 2
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from buttermilk.llm.response_format import MODES

COMPLETIONS = "/v1/chat/completions"
MODELS = "/v1/models"


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])

    def text(self, role: str) -> str:
        """Content of the last message with ``role``."""
        return str([m for m in self.messages if m["role"] == role][-1]["content"])


@dataclass(frozen=True)
class Reply:
    """How to answer one request."""

    content: str = "ok"
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    model: str | None = None  # reported model; default: the requested one
    usage: tuple[int, int] | None = None  # (prompt, completion); default: chars / 4
    with_usage: bool = True
    # Reported as OpenAI does (usage.prompt_tokens_details.cached_tokens and
    # usage.completion_tokens_details.reasoning_tokens) when set: parts of the two above.
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # a whole JSON body instead of a completion (for errors)


Step = Reply | Callable[[Seen], Reply]


def answer(content: str, **kwargs: Any) -> Reply:
    return Reply(content=content, **kwargs)


def error(status: int, message: str = "", headers: dict[str, str] | None = None) -> Reply:
    body = {"error": {"message": message or f"error {status}", "type": "test", "code": None}}
    return Reply(status=status, body=body, headers=headers or {})


def openai_refusal(kind: str) -> Reply:
    """OpenAI's answer to a response_format the model does not support (HTTP 400)."""
    message = (
        f"Invalid parameter: 'response_format' of type '{kind}' is not supported with this model."
    )
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "response_format",
            "code": None,
        }
    }
    return Reply(status=400, body=body)


def llama_cpp_refusal(kind: str) -> Reply:
    """llama-cpp-python 0.3's server's answer to a response_format type it lacks (HTTP 500,
    its request validation error as text)."""
    detail = (
        "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        f"'msg': \"Input should be 'text' or 'json_object'\", 'input': '{kind}', "
        "'ctx': {'expected': \"'text' or 'json_object'\"}}]"
    )
    body = {"error": {"message": detail, "type": "internal_server_error"}}
    return Reply(status=500, body=body)


class FakeOpenAI:
    """The server; ``start()`` it, or use the ``fake_openai`` fixture."""

    def __init__(self) -> None:
        self.default: Step = Reply()
        self._refused: dict[str, Callable[[str], Reply]] = {}
        self._script: deque[Step] = deque()
        self._requests: list[Seen] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self.models_status = 200
        self.model_lists = 0  # GET /v1/models requests answered
        self._server, self._thread = self._serve(0)
        self._port: int = self._server.server_address[1]

    def _serve(self, port: int) -> tuple[_Server, threading.Thread]:
        server = _Server(("127.0.0.1", port), _Handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        return server, thread

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *steps: Step) -> None:
        """Answer the next requests with these steps, in order."""
        with self._changed:
            self._script.extend(steps)

    def refuse(self, kind: str, how: Callable[[str], Reply] = openai_refusal) -> None:
        """Refuse every request whose ``response_format`` has type ``kind`` with ``how(kind)``
        (the request is recorded; no step of the script is taken)."""
        self._refused[kind] = how

    def refusals(self) -> list[Seen]:
        """The requests refused for their response_format."""
        return [seen for seen in self.requests if _format_type(seen) in self._refused]

    def always(self, step: Step) -> None:
        """Answer with ``step`` once the script is used up."""
        self.default = step

    @property
    def requests(self) -> list[Seen]:
        with self._changed:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """Client connections the server holds open now."""
        with self._changed:
            return len(self._connections)

    def wait_for_requests(self, count: int, timeout: float = 10) -> list[Seen]:
        """The first ``count`` requests, once they have arrived; fails the test after
        ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                pytest.fail(f"fake OpenAI server: {len(self._requests)} of {count} requests")
            return list(self._requests[:count])

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port and every connection: calls now fail to connect."""
        self.close()

    def restart(self) -> None:
        """Listen on the same port again, after :meth:`stop`."""
        self._closing.clear()
        self._server, self._thread = self._serve(self._port)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()  # ends delayed answers at once
        self._server.shutdown()
        with self._changed:
            open_connections = list(self._connections)
        for conn in open_connections:  # idle keep-alive connections end their threads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- used by the handler -----------------------------------------------------------

    def _received(self, seen: Seen) -> Step:
        with self._changed:
            self._requests.append(seen)
            self._changed.notify_all()
            refused = self._refused.get(_format_type(seen) or "")
            if refused is not None:
                return refused(_format_type(seen) or "")
            return self._script.popleft() if self._script else self.default

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._changed:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen() backlog: many clients may connect at once
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
    timeout = 30  # an idle connection ends after this

    @property
    def fake(self) -> FakeOpenAI:
        assert isinstance(self.server, _Server)
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, True)

    def finish(self) -> None:
        self.fake._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        status = self.fake.models_status if self.path == MODELS else 404
        if status != 200:
            self._send(status, {"error": {"message": f"error {status} on {self.path}"}}, {})
            return
        with self.fake._changed:
            self.fake.model_lists += 1
            bodies = [seen.body for seen in self.fake._requests if isinstance(seen.body, dict)]
            asked = sorted({str(body.get("model")) for body in bodies})
        models = [{"id": name, "object": "model", "owned_by": "fake"} for name in asked]
        self._send(200, {"object": "list", "data": models}, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = Seen(time.monotonic(), "POST", self.path, headers, body)
        step = self.fake._received(seen)
        if self.path != COMPLETIONS:
            self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
            return
        reply = step(seen) if callable(step) else step
        if reply.delay and self.fake._closing.wait(reply.delay):
            return
        if reply.body is not None or reply.status != 200:
            self._send(reply.status, reply.body or {}, reply.headers)
        else:
            self._send(200, _completion(seen, reply), reply.headers)

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (a timeout test)
            self.close_connection = True


def _format_type(seen: Seen) -> str | None:
    found = seen.body.get("response_format") if isinstance(seen.body, dict) else None
    kind = found.get("type") if isinstance(found, dict) else None
    return kind if isinstance(kind, str) else None


def _completion(seen: Seen, reply: Reply) -> dict[str, Any]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        prompt = sum(len(str(m.get("content", ""))) for m in seen.messages) // 4 + 1
        completion = len(reply.content) // 4 + 1
    body: dict[str, Any] = {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or seen.body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    if reply.with_usage:
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if reply.cached_tokens is not None:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
        if reply.reasoning_tokens is not None:
            details = {"reasoning_tokens": reply.reasoning_tokens}
            body["usage"]["completion_tokens_details"] = details
    return body


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started fake server, closed after the test. The response modes this process
    learnt of earlier servers (at the same port, maybe) are forgotten."""
    MODES.forget()
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.close()
