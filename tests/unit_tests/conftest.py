import socket
from collections.abc import Callable
from typing import Any

import pytest
from pytest_socket import SocketBlockedError

from tests.fakes import CallLog, FakeChat


class SocketBlock:
    """Refuse every network socket while on (Unix sockets stay allowed for asyncio).

    pytest-socket's own block swaps ``socket.socket`` (and ``getaddrinfo``) for guards that
    always refuse, and a module first imported during a unit test keeps whatever it read then:
    uvloop reads ``socket.socket`` once, so a unit test that first imported it (``moa serve``'s
    event loop) left every uvicorn server started later in the same pytest call refusing its
    listening socket ("A test tried to use socket.socket"), and the integration tests after
    it failed at setup. These guards refuse only while a unit test runs; what took them keeps
    working after it.
    """

    def __init__(self) -> None:
        self.on = False
        self.real = (socket.socket, socket.getaddrinfo, socket.gethostbyname)
        block = self

        class GuardedSocket(socket.socket):
            def __new__(
                cls, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
            ) -> "GuardedSocket":
                if block.on and block.family(family, fileno) != socket.AF_UNIX:
                    raise SocketBlockedError()
                return super().__new__(cls, family, type, proto, fileno)

        self.socket = GuardedSocket
        self.getaddrinfo = self._guard(socket.getaddrinfo)
        self.gethostbyname = self._guard(socket.gethostbyname)

    def family(self, family: int, fileno: Any) -> int:
        """The family a socket is made with: a descriptor's own where one is given.

        ``socket.socket(fileno=fd)`` leaves the family to the descriptor (-1, refused as a
        network socket's), as a Unix socket handed over by descriptor is made.
        """
        if fileno is None:
            return family
        probe = self.real[0](fileno=fileno)
        try:
            return probe.family
        finally:
            probe.detach()  # the descriptor stays its owner's

    def _guard(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                raise SocketBlockedError(f"A test tried to use socket.{real.__name__}.")
            return real(*args, **kwargs)

        return guarded

    def start(self) -> None:
        self.on = True
        socket.socket, socket.getaddrinfo, socket.gethostbyname = (  # type: ignore[misc]
            self.socket,
            self.getaddrinfo,
            self.gethostbyname,
        )

    def stop(self) -> None:
        self.on = False
        socket.socket, socket.getaddrinfo, socket.gethostbyname = self.real  # type: ignore[misc]


SOCKETS = SocketBlock()


@pytest.fixture(autouse=True)
def no_network():
    """Unit tests never open a network socket (Unix sockets stay allowed for asyncio)."""
    SOCKETS.start()
    yield
    SOCKETS.stop()


@pytest.fixture
def log() -> CallLog:
    return CallLog()


@pytest.fixture
def fake(log: CallLog):
    made: list[FakeChat] = []

    def make(label: str, **kwargs) -> FakeChat:
        made.append(FakeChat(label=label, log=log, **kwargs))
        return made[-1]

    yield make
    for model in made:  # hung sync calls end with their test, not 30 s into another one
        model.release()
