"""The unit suite's socket block refuses network sockets in unit tests, and only there."""

import socket

import pytest
from pytest_socket import SocketBlockedError

from tests.unit_tests.conftest import SOCKETS


def test_a_unit_test_cannot_open_a_network_socket_or_resolve_a_name():
    with pytest.raises(SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(SocketBlockedError):
        socket.getaddrinfo("localhost", 80)
    left, right = socket.socketpair()  # Unix sockets stay allowed: asyncio's loops need them
    left.close()
    right.close()


def test_what_a_unit_test_took_of_the_socket_module_works_once_the_test_is_over():
    """uvloop reads ``socket.socket`` on its first import, which can be inside a unit test.

    The guard it took then must refuse only while a unit test runs: the integration tests
    after it in the same pytest call start servers with it.
    """
    taken, resolve = socket.socket, socket.getaddrinfo  # as a module imported now keeps them
    SOCKETS.stop()  # as between this test and the next, an integration test
    try:
        taken(socket.AF_INET, socket.SOCK_STREAM).close()
        assert resolve("127.0.0.1", 80, type=socket.SOCK_STREAM)
    finally:
        SOCKETS.start()
    with pytest.raises(SocketBlockedError):
        taken(socket.AF_INET, socket.SOCK_STREAM)
