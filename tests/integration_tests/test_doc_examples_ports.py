"""The fixed ports the docs' servers use, as tests/integration_tests/test_doc_examples_local.py
starts them: a port another program holds fails that module at once, naming the port.

A module of its own: the other module's `moa serve` holds port 8000 until that module ends.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest

from tests.helpers import serve_pids
from tests.integration_tests.test_doc_examples_local import environment
from tests.snippets import ROOT

pytestmark = [pytest.mark.local_models, pytest.mark.usefixtures("local_models_available")]

MODULE = "tests/integration_tests/test_doc_examples_local.py"


class _Healthy(http.server.BaseHTTPRequestHandler):
    """Another program on the port: it answers 200 to anything, as another `moa serve` does."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_a_taken_port_fails_at_once_naming_it(tmp_path):
    """A module run while port 8000 is another program's says so, and leaves nothing running.

    Were the fixture to start `moa serve` anyway, its health check would be answered by the
    other program and the block would run against it.
    """
    foreign = http.server.ThreadingHTTPServer(("127.0.0.1", 8000), _Healthy)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    before = serve_pids()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"{MODULE}::test_the_openai_client_block",
            ],
            cwd=ROOT,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        foreign.shutdown()
        foreign.server_close()
    assert result.returncode != 0, result.stdout[-3000:]
    assert "port 8000 is taken" in result.stdout, result.stdout[-3000:]
    assert not serve_pids() - before, "llama.cpp servers left behind"


def test_a_server_that_exits_at_start_is_reported_as_such(tmp_path):
    """One that exits before answering (a port taken meanwhile) is named, with its log.

    Before, stopping it raised ProcessLookupError (its process group was gone), hiding why.
    """
    from langgraph_moa.transport._net import free_port
    from tests.integration_tests.test_doc_examples_local import serving

    code = "print('could not bind: address in use'); raise SystemExit(1)"
    log = tmp_path / "server.log"
    with (
        pytest.raises(AssertionError, match="the server exited: could not bind"),
        serving([sys.executable, "-c", code], free_port(), "/health", log),
    ):
        pass
