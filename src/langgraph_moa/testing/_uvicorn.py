"""Run an ASGI app with uvicorn in a background thread on a free loopback port."""

import threading
import time
from typing import Any

from langgraph_moa.transport._net import free_port


class BackgroundServer:
    """Serve `app` on 127.0.0.1 until `stop()`; a context manager."""

    def __init__(self, app: Any, port: int | None = None, **options: Any) -> None:
        """Pick a free port unless one is given; nothing starts yet.

        `options` are more `uvicorn.Config` settings (the protocol class of `moa serve`).
        """
        self.app = app
        self.options = options
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> "BackgroundServer":
        """Start serving and wait until the port accepts connections."""
        try:
            import uvicorn
        except ImportError:
            from langgraph_moa.errors import MissingExtraError

            raise MissingExtraError("langgraph_moa.testing's servers", "serve", "uvicorn") from None

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            timeout_graceful_shutdown=1,  # do not wait for hung requests to finish
            **self.options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not getattr(self._server, "started", False):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 10 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
