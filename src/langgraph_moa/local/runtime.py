"""llama.cpp servers for the packaged models: started on demand, reused, always stopped.

Parallelism: llama-cpp-python's server keeps one model loaded and answers one request at a
time, so the runtime starts **one server process per local model**; proposers of different
models in one layer then really run at the same time. Each server is a child process on a
free loopback port that exits by itself when this process goes away (see `_serve.py`), and
`atexit` stops them on a normal exit or Ctrl-C. `benchmarks/local_concurrency.py` measures
what this buys on the machine at hand.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import PrivateAttr

from langgraph_moa._net import free_port
from langgraph_moa.errors import MoAError
from langgraph_moa.local.catalog import LocalModelError, LocalModelInfo, lookup, model_path
from langgraph_moa.models import own_async_client, register_local_factory

READY_TIMEOUT_S = 120.0


class LocalRuntimeError(MoAError, RuntimeError):
    """A local server could not start or died; the message carries its own last words."""


def default_threads() -> int:
    """Threads per server: ``$LANGGRAPH_MOA_THREADS``, else half the cores (at least 1).

    Measured on 2 cores (benchmarks/local_concurrency.py, 3 proposers, 96 tokens): with 1
    thread per server the concurrent layer took 6.1 s against 8.7 s sequential (1.43x);
    with 2 threads per server it collapsed to 32.1 s against 5.0 s, because llama.cpp's
    worker threads spin and three servers then fight over two cores. Oversubscription is
    the failure to avoid, so a server gets a share of the cores, not all of them.
    """
    value = os.environ.get("LANGGRAPH_MOA_THREADS")
    return int(value) if value else max(1, (os.cpu_count() or 2) // 2)


class LocalServer:
    """One llama.cpp server process serving one model on 127.0.0.1."""

    def __init__(self, info: LocalModelInfo, *, threads: int, port: int | None = None) -> None:
        """Spawn the process; it loads the model in the background (see `wait_ready`)."""
        self.info = info
        self._model = {
            "model": str(model_path(info)),
            "model_alias": info.name,
            "n_ctx": info.n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            "chat_format": info.chat_format,
            "verbose": False,
        }
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._spawn(port or free_port())

    def _spawn(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"
        self._log = tempfile.NamedTemporaryFile(
            prefix=f"moa-{self.info.name}-", suffix=".log", delete=False
        )
        settings = {
            "parent_pid": os.getpid(),
            "host": "127.0.0.1",
            "port": port,
            "model": self._model,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "langgraph_moa.local._serve", json.dumps(settings)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop the servers ourselves
        )

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.process.pid

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        return self.process.poll() is None

    def last_words(self, lines: int = 12) -> str:
        """Return the tail of the server's log, for error messages."""
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the server answers, or raise with the reason it did not."""
        if self._ready.is_set():
            if not self.alive():
                raise self._died()
            return
        with self._lock:
            deadline = time.monotonic() + timeout
            respawns = 0
            while not self._ready.is_set():
                if not self.alive():
                    # Another program took the port between our choosing it and the server
                    # binding it: take a new free port rather than fail the run.
                    if "address already in use" in self.last_words().lower() and respawns < 3:
                        respawns += 1
                        self._log.close()
                        self._spawn(free_port())
                        continue
                    raise self._died()
                try:
                    if httpx.get(f"{self.url}/models", timeout=1.0).status_code == 200:
                        self._ready.set()
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise LocalRuntimeError(
                        f"The llama.cpp server for {self.info.name!r} did not answer within "
                        f"{timeout:.0f}s on port {self.port}. Its log:\n{self.last_words()}"
                    )
                time.sleep(0.1)

    def _died(self) -> LocalRuntimeError:
        return LocalRuntimeError(
            f"The llama.cpp server for {self.info.name!r} (pid {self.pid}, port {self.port}) "
            f"exited with code {self.process.returncode}. Its log:\n{self.last_words()}"
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate the process, then kill it if it lingers."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class LocalRuntime:
    """The set of running local servers, one per model, shared by every graph in a process."""

    _default: LocalRuntime | None = None
    _default_lock = threading.Lock()

    def __init__(self, threads: int | None = None) -> None:
        """Create an empty runtime; servers start on first use."""
        self.threads = threads or default_threads()
        self._servers: dict[str, LocalServer] = {}
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> LocalRuntime:
        """Return the process-wide runtime, stopped automatically at exit."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
                atexit.register(cls._default.stop_all)
            return cls._default

    def server(self, name: str) -> LocalServer:
        """Return the server of model `name`, spawning it if needed (does not wait)."""
        info = lookup(name)
        with self._lock:
            server = self._servers.get(name)
            if server is None or not server.alive():
                if server is not None:
                    server.stop()
                server = self._servers[name] = LocalServer(info, threads=self.threads)
            return server

    def start(self, names: list[str]) -> list[LocalServer]:
        """Start several servers in parallel and wait until all answer."""
        servers = [self.server(n) for n in names]
        for server in servers:
            server.wait_ready()
        return servers

    def running(self) -> list[LocalServer]:
        """Servers whose process is alive."""
        with self._lock:
            return [s for s in self._servers.values() if s.alive()]

    def stop_all(self) -> None:
        """Stop every server this runtime started."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()

    def chat_model(self, name: str, params: dict[str, Any]) -> BaseChatModel:
        """Return a chat model bound to the server of `name` (spawned now, awaited later)."""
        server = self.server(name)
        client = params.get("http_async_client") or own_async_client()  # shared if given
        model = LocalChatModel(
            model=name,
            base_url=server.url,
            api_key="local",  # type: ignore[arg-type]
            max_retries=0,  # retries belong to the graph's RetryPolicy
            **{**params, "http_async_client": client},
        )
        model._runtime = self
        return model


class LocalChatModel(BaseChatOpenAI):
    """An OpenAI-compatible client that makes sure its llama.cpp server is up before calling.

    It looks the server up by model name at each call, so a server that died is replaced by
    a fresh one on the next attempt instead of failing every retry against a dead port.
    """

    _runtime: LocalRuntime | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "langgraph-moa-local"

    def _ensure_server(self) -> LocalServer:
        runtime = self._runtime or LocalRuntime.default()
        server = runtime.server(self.model_name)
        server.wait_ready()  # may move to a new port if the first one was taken
        with _CLIENT_LOCK:
            if server.url != self.openai_api_base:
                # The server was replaced or moved: point this client at it.
                self.openai_api_base = server.url
                self.client = self.async_client = None
                self.root_client = self.root_async_client = None
                self.validate_environment()  # type: ignore[operator]  # rebuilds the clients
        return server

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self._ensure_server()
        return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.to_thread(self._ensure_server)
        return await super()._agenerate(*args, **kwargs)

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        server = self._ensure_server()
        parts: list[str] = []
        counted = False
        for chunk in super()._stream(messages, *args, **kwargs):
            parts.append(chunk.text)
            counted = counted or bool(getattr(chunk.message, "usage_metadata", None))
            yield chunk
        if not counted:
            yield _usage_chunk(server, self.model_name, messages, "".join(parts))

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        server = await asyncio.to_thread(self._ensure_server)
        parts: list[str] = []
        counted = False
        async for chunk in super()._astream(messages, *args, **kwargs):
            parts.append(chunk.text)
            counted = counted or bool(getattr(chunk.message, "usage_metadata", None))
            yield chunk
        if not counted:
            yield await asyncio.to_thread(
                _usage_chunk, server, self.model_name, messages, "".join(parts)
            )


_CLIENT_LOCK = threading.Lock()


def _count_tokens(server: LocalServer, model: str, text: str) -> int:
    root = server.url.removesuffix("/v1")
    response = httpx.post(
        f"{root}/extras/tokenize/count", json={"input": text, "model": model}, timeout=30
    )
    response.raise_for_status()
    return int(response.json()["count"])


def _usage_chunk(
    server: LocalServer, model: str, messages: list[BaseMessage], completion: str
) -> ChatGenerationChunk:
    """Token usage for a streamed reply, which llama.cpp's server does not report.

    Counted with the model's own tokenizer: the completion exactly; the prompt as the text of
    the messages, which leaves out the few tokens the chat template adds around each one.
    """
    prompt = _count_tokens(server, model, "\n".join(m.text for m in messages))
    output = _count_tokens(server, model, completion) if completion else 0
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata={
                "input_tokens": prompt,
                "output_tokens": output,
                "total_tokens": prompt + output,
            },
            response_metadata={"usage_source": "tokenizer count after streaming"},
        )
    )


def _factory(name: str, params: dict[str, Any]) -> BaseChatModel:
    try:
        return LocalRuntime.default().chat_model(name, params)
    except LocalModelError as exc:
        raise LocalRuntimeError(str(exc)) from None


register_local_factory(_factory)
