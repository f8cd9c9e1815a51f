"""How the aiohttp transport's failures reach the SDK: a refused connection is not a timeout."""

import asyncio

import httpx2
import pytest

from langgraph_moa.transport._http import MAX_RESPONSE_BYTES, _check_requests_of


class FailingTransport:
    """Raises what the SDK's aiohttp adapter raises, with the aiohttp error as its cause."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause

    async def handle_async_request(self, request):
        raise httpx2.ConnectTimeout("Cannot connect to host 127.0.0.1:9") from self.cause


def send_through(cause: BaseException) -> BaseException:
    transport = FailingTransport(cause)
    _check_requests_of(transport, MAX_RESPONSE_BYTES)
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    with pytest.raises(httpx2.TransportError) as caught:
        asyncio.run(transport.handle_async_request(request))
    return caught.value


def test_a_refused_connection_is_a_connect_error_with_its_cause():
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)")
    error = send_through(refused)
    assert type(error) is httpx2.ConnectError  # the SDK raises APIConnectionError for it
    assert error.__cause__ is refused
    assert "Cannot connect to host 127.0.0.1:9" in str(error)


def test_a_connect_that_timed_out_stays_a_timeout():
    error = send_through(TimeoutError())
    assert type(error) is httpx2.ConnectTimeout


def test_a_connect_the_os_timed_out_stays_a_timeout():
    import aiohttp

    key = type("Key", (), {"host": "10.255.255.1", "port": 80, "ssl": None})()
    os_timeout = TimeoutError(110, "Connection timed out")
    error = send_through(aiohttp.ClientConnectorError(key, os_timeout))
    assert type(error) is httpx2.ConnectTimeout
