"""The unit suite's socket block refuses network sockets in unit tests, and only there."""

import os
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


def test_a_socket_made_from_a_unix_sockets_descriptor_is_allowed():
    """``socket.socket(fileno=fd)`` leaves the family to the descriptor (-1), which the guard
    took for a network socket: a Unix socket handed over by descriptor was refused. A
    network socket's descriptor is still refused, and left open for its owner."""
    left, right = socket.socketpair()
    adopted = socket.socket(fileno=os.dup(left.fileno()))
    assert adopted.family == socket.AF_UNIX
    for made in (adopted, left, right):
        made.close()
    network = SOCKETS.real[0](socket.AF_INET, socket.SOCK_STREAM)  # never connected
    try:
        with pytest.raises(SocketBlockedError):
            socket.socket(fileno=network.fileno())
        assert network.family == socket.AF_INET and network.fileno() >= 0
    finally:
        network.close()
