"""`_http._close_at_loop_end`: sessions closed with their loop, and the loop then let go."""

import asyncio
import gc
import weakref

from langgraph_moa.transport import _http


class _Session:
    closed = False

    async def close(self) -> None:
        self.closed = True


def test_a_loop_that_shut_down_is_let_go_with_its_sessions_closed():
    # Each asyncio.run of a notebook or script kept its loop for ever: the hook's generator,
    # kept per loop, holds its loop (asyncio's finalizer hook is the loop's bound method).
    # The generator is kept past the loop's end, as a transport keeps it: let go inside the
    # loop, it closed the session itself, and a shutdown that closed nothing went unseen.
    session = _Session()
    kept = []

    async def open_session() -> weakref.ref[asyncio.AbstractEventLoop]:
        kept.append(_http._close_at_loop_end(session))
        return weakref.ref(asyncio.get_running_loop())

    finished = asyncio.run(open_session())
    assert session.closed  # by the loop's shutdown: the generator is still held
    kept.clear()
    gc.collect()
    assert finished() is None


class _Transport:
    """An SDK transport as `_http._hook_session_opening` finds it: it opens one session."""

    session: _Session | None = None

    def get_client(self) -> _Session:
        if self.session is None:
            self.session = _Session()
        return self.session


async def _open_session(transport: _Transport) -> None:
    transport.get_client()


def test_a_loop_left_open_is_let_go_with_its_transport():
    # A worker that runs each job on a loop of its own and never closes it (run_until_complete
    # on a new loop) kept every such loop for ever, held by the hook's generator: with each,
    # its open sockets and its executor's threads, until the process ran out of them.
    transport = _Transport()
    _http._hook_session_opening(transport)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_open_session(transport))
    loop.call_soon(transport.get_client)  # the loop holds it, as a client's close it never ran
    left = weakref.ref(loop)
    del loop, transport
    gc.collect()
    assert left() is None


def test_a_hooked_transports_session_is_closed_when_its_loop_shuts_down():
    transport = _Transport()
    _http._hook_session_opening(transport)
    asyncio.run(_open_session(transport))
    assert transport.session is not None and transport.session.closed
