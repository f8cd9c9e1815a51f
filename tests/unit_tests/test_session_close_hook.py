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
    session = _Session()

    async def open_session() -> weakref.ref[asyncio.AbstractEventLoop]:
        _http._close_at_loop_end(session)
        return weakref.ref(asyncio.get_running_loop())

    finished = asyncio.run(open_session())
    gc.collect()
    assert session.closed
    assert finished() is None
