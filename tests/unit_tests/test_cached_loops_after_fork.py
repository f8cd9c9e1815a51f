"""A loop the package holds models of, in a forked child: its epoll set is the child's own.

The real fork with HTTP calls is in the integration tests (test_loops_after_fork.py); here
the loop hears a socket pair, and the child does what a dropped connection's transport does.
"""

import asyncio
import os
import socket

import pytest

from langgraph_moa.providers._models import ModelCache
from tests.helpers import exit_code

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")

WAIT_S = 30.0
"""The guard on hearing the socket: a loop whose registration is gone waits for ever."""


def test_a_forked_child_neither_unregisters_nor_loses_an_idle_loops_sockets():
    # A loop driven by hand idles at the fork with its sockets registered. The child taking
    # one out (a dropped keep-alive connection closing) took it out of the parent's epoll
    # set, shared with the child: the parent's loop never heard that socket again. The
    # child may still run the loop: it hears what the loop heard at the fork.
    cache = ModelCache()
    loop = asyncio.new_event_loop()
    mine, theirs = socket.socketpair()
    waiting: list[asyncio.Future[bytes]] = []

    def heard() -> bytes:
        """Send a byte to `mine` and return what the reader registered before the fork read."""
        waiting.append(loop.create_future())
        theirs.send(b"x")
        return loop.run_until_complete(asyncio.wait_for(waiting[-1], WAIT_S))

    try:

        async def build() -> None:  # no connection is made until a call
            cache.get("a@http://127.0.0.1:9/v1", {})

        loop.run_until_complete(build())
        loop.add_reader(mine, lambda: waiting[-1].done() or waiting[-1].set_result(mine.recv(1)))
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's lines are not measured
            code = 1
            try:
                code = 0 if heard() == b"x" else 2
                loop.remove_reader(mine)  # as a dropped connection's transport does
            finally:
                os._exit(code)
        assert exit_code(child, 2 * WAIT_S) == 0  # a child that hangs is killed
        assert heard() == b"x"
    finally:
        loop.close()
        mine.close()
        theirs.close()
