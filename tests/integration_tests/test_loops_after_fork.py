"""The parent's event loops after a fork: a child that drops what it inherited leaves them be.

A forked child shares its parent's epoll instances: when it dropped the parent's models and
their HTTP connections (or exited), each connection unregistered itself from the parent's
loop's epoll set, and the parent's next call on a reused keep-alive connection never woke
its loop. These tests fork for real, with a scripted server in this process.
"""

import asyncio
import datetime
import gc
import ipaddress
import os
import ssl
import threading
from typing import Any

import aiohttp
import pytest
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.testing.scripted_server import ScriptedServer
from langgraph_moa.transport._http import _close_at_loop_end
from tests.helpers import exit_code

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")

WAIT_S = 30.0
"""The guard on the parent's call after the fork: a loop that no longer hears its
connections waits for ever, so reaching it fails the test (no timing is asserted)."""

CHILD_WAIT_S = 60.0
"""The guard on the forked child's run: a child that hangs (a lock another parent thread
held at the fork) is killed and fails the test instead of holding the run for ever."""

QUESTION = {"messages": [HumanMessage("hi there")]}


def _config(url: str) -> MoAConfig:
    return MoAConfig(proposers=[f"a@{url}", f"b@{url}"], aggregator=f"agg@{url}", layers=2)


def _fork_a_child_that_runs(config: MoAConfig, how: str) -> None:
    """Fork a child that runs a graph of its own, drops what it inherited, and exits."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's lines are not measured
        code = 1
        try:
            graph = create_moa_graph(config)
            if how == "invoke":
                graph.invoke(QUESTION)
            else:
                asyncio.run(graph.ainvoke(QUESTION))
            del graph
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    assert exit_code(child, CHILD_WAIT_S) == 0


def _answer_of(result: dict) -> str:
    return str(result["messages"][-1].content)


@pytest.mark.parametrize("how", ["ainvoke", "invoke"])
def test_the_parents_loop_in_a_thread_keeps_working_after_a_forked_child_ran(how):
    # The parent runs its graph on a loop of a daemon thread (a server's), forks a worker
    # that makes calls of its own and exits: the parent's next run never returned.
    with ScriptedServer() as server:
        config = _config(server.url)
        graph = create_moa_graph(config)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            first = asyncio.run_coroutine_threadsafe(graph.ainvoke(QUESTION), loop)
            assert _answer_of(first.result(WAIT_S))
            _fork_a_child_that_runs(config, how)
            again = asyncio.run_coroutine_threadsafe(graph.ainvoke(QUESTION), loop)
            try:
                assert _answer_of(again.result(WAIT_S))
            finally:
                again.cancel()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT_S)
            if not thread.is_alive():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()


def test_the_parents_idle_loop_keeps_working_after_a_forked_child_ran():
    # A loop driven by hand (run_until_complete, kept open between runs) idles at the fork
    # with its keep-alive connections registered: the child took them out of its epoll set.
    with ScriptedServer() as server:
        config = _config(server.url)
        graph = create_moa_graph(config)
        loop = asyncio.new_event_loop()
        try:
            assert _answer_of(loop.run_until_complete(graph.ainvoke(QUESTION)))
            _fork_a_child_that_runs(config, "ainvoke")
            again = asyncio.wait_for(graph.ainvoke(QUESTION), WAIT_S)
            assert _answer_of(loop.run_until_complete(again))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return a server context and a client context trusting it, for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


def test_a_forked_child_leaves_the_parents_tls_connections_open(tmp_path):
    # A child dropping its parent's sessions closed their TLS connections the TLS way: it
    # wrote a close_notify on each, which ended the connection for the server, and the
    # parent's next request on it raced the server's close (a failed call) or, at best,
    # cost a new handshake. The child leaves them to the parent and writes nothing.
    server_context, client_context = _self_signed(tmp_path)
    connections: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("open")
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            connections.append("ended by the client")
        finally:
            writer.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(WAIT_S)

    held: dict[str, Any] = {}

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context))
        # Known to the fork hooks as the package's sessions are; the watcher is kept with it.
        held["session"], held["watcher"] = session, _close_at_loop_end(session)
        return server

    async def get() -> str:
        async with held["session"].get(url) as response:
            return await response.text()

    try:
        server = run(start())
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        assert run(get()) == "ok"
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's lines are not measured
            code = 1
            try:
                held.clear()  # as the child's model cache drops the parent's clients
                gc.collect()
                code = 0
            finally:
                os._exit(code)
        assert exit_code(child, CHILD_WAIT_S) == 0
        assert run(get()) == "ok"
        assert connections == ["open"]  # the same connection answered, never ended
    finally:
        if "session" in held:
            run(held.pop("session").close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
