"""A misbehaving model server (a buggy proxy, a compromised host) the operator configured.

Its answers are bounded in size and its redirects are not followed: the call fails with one
sentence naming the model and what it sent, and the run goes on with the other proposers.
"""

import asyncio
import gzip

import openai
import pytest

from langgraph_moa import MoAConfig, MoAConfigError, UpstreamResponseError, create_moa_graph
from langgraph_moa.testing import FaultProfile, FaultServer
from langgraph_moa.transport import _http
from langgraph_moa.transport._http import own_async_client, own_sync_client

CAP = 1_000_000
"""The answer bound in these tests (the real one is 32 MiB): small keeps them quick."""

BOUND_S = 120.0
"""A call still going after this is one the bound did not stop."""


@pytest.fixture(autouse=True)
def small_cap(monkeypatch):
    monkeypatch.setattr(_http, "MAX_RESPONSE_BYTES", CAP)


def run_with(bad: FaultProfile) -> tuple[dict, FaultServer]:
    """Run a graph whose first proposer is `bad` and second a well-behaved one."""
    with FaultServer({"bad": bad}) as server:
        config = MoAConfig(
            proposers=[f"bad@{server.url}", f"good@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
        )
        graph = create_moa_graph(config)
        out = asyncio.run(asyncio.wait_for(graph.ainvoke({"messages": [("user", "hi")]}), BOUND_S))
    return out, server


def failed_call(out: dict) -> dict:
    """Return the bad proposer's failed call, checking it is the only one."""
    (call,) = [c for c in out["calls"] if c["status"] != "ok"]
    assert call["model"].startswith("bad@")
    return call


def test_a_redirect_to_another_host_is_not_followed_and_the_run_goes_on():
    with FaultServer() as elsewhere:
        out, server = run_with(FaultProfile(redirect_to=f"{elsewhere.url}/chat/completions"))
        assert sum(elsewhere.requests.values()) == 0  # the prompt never reached that host
    assert server.requests["bad"] == 1  # not retried: it redirects again
    error = failed_call(out)["error"]
    assert error.startswith("UpstreamResponseError: Model 'bad' at 127.0.0.1:")
    assert "answered 307, a redirect, which is not followed" in error
    assert out["messages"][-1].content.startswith("agg answer")


def test_a_huge_answer_fails_its_call_at_the_bound_and_the_run_goes_on():
    out, server = run_with(FaultProfile(flood_bytes=8 * CAP))
    assert server.requests["bad"] == 1  # not retried: it floods again
    error = failed_call(out)["error"]
    assert f"sent an answer of more than {CAP:,} bytes" in error
    assert "Model 'bad'" in error
    assert out["messages"][-1].content.startswith("agg answer")


async def endless_stream(url: str) -> None:
    client = openai.AsyncOpenAI(
        base_url=url, api_key="x", http_client=own_async_client(), max_retries=0
    )
    stream = await client.chat.completions.create(
        model="bad", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5
    )
    async for _ in stream:
        pass


STREAMS = {
    "never ends": FaultProfile(flood_bytes=10**15),
    "one line with no end": FaultProfile(raw_body=b"data: " + b"x" * (4 * CAP)),
}


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("stream", list(STREAMS))
def test_a_stream_that_never_ends_is_stopped_at_the_bound(monkeypatch, transport, stream):
    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    with FaultServer({"bad": STREAMS[stream]}) as server:
        with pytest.raises(UpstreamResponseError, match="more than 1,000,000 bytes"):
            asyncio.run(asyncio.wait_for(endless_stream(server.url), BOUND_S))


def test_a_compressed_answer_is_bounded_by_its_decompressed_size():
    bomb = gzip.compress(b" " * (20 * CAP))  # about 20 KB on the wire
    profile = FaultProfile(raw_body=bomb, headers={"content-encoding": "gzip"})
    out, _ = run_with(profile)
    assert f"sent an answer of more than {CAP:,} bytes" in failed_call(out)["error"]


@pytest.mark.parametrize("misbehaving", ["flood", "redirect"])
def test_the_sync_client_bounds_answers_and_follows_no_redirect(misbehaving):
    with FaultServer() as elsewhere:
        bad = {
            "flood": FaultProfile(flood_bytes=8 * CAP),
            "redirect": FaultProfile(redirect_to=f"{elsewhere.url}/chat/completions"),
        }[misbehaving]
        with FaultServer({"bad": bad}) as server:
            client = openai.OpenAI(
                base_url=server.url, api_key="x", http_client=own_sync_client(), max_retries=0
            )
            with pytest.raises(Exception) as caught:
                client.chat.completions.create(
                    model="bad", messages=[{"role": "user", "content": "hi"}]
                )
        assert sum(elsewhere.requests.values()) == 0
    error = caught.value  # the SDK may wrap it as a connection error
    assert isinstance(error, UpstreamResponseError) or isinstance(
        error.__cause__, UpstreamResponseError
    )
    for client_of in (own_sync_client, own_async_client):
        assert client_of().follow_redirects is False


def answer_with_usage(usage: str) -> bytes:
    """A plain answer whose usage field is `usage`, as written (JSON text)."""
    message = '{"role": "assistant", "content": "hi there"}'
    return (
        '{"id": "x", "object": "chat.completion", "created": 0, "model": "bad", "choices": '
        f'[{{"index": 0, "message": {message}, "finish_reason": "stop"}}], "usage": {usage}}}'
    ).encode()


def test_a_negative_usage_neither_lowers_the_runs_tokens_nor_escapes_the_budget():
    usage = '{"prompt_tokens": -1000000000, "completion_tokens": 2, "total_tokens": -999999998}'
    with FaultServer({"bad": FaultProfile(raw_body=answer_with_usage(usage))}) as server:
        config = MoAConfig(
            proposers=[f"bad@{server.url}", f"good@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=3,
            budget={"max_tokens": 10},  # the good proposer's first call spends more
        )
        out = create_moa_graph(config).invoke({"messages": [("user", "hi")]})
    bad = next(c for c in out["calls"] if c["model"].split("@")[0] == "bad")
    assert bad["prompt_tokens"] == 0 and bad["total_tokens"] == 2
    assert out["usage"]["total"]["prompt_tokens"] > 0
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "budget"


@pytest.mark.parametrize("count", ['"five"', "1e309", "-2.5e400"])
def test_a_usage_count_that_is_no_count_reads_as_none_and_the_answer_stands(count):
    usage = f'{{"prompt_tokens": {count}, "completion_tokens": 2, "total_tokens": {count}}}'
    out, _ = run_with(FaultProfile(raw_body=answer_with_usage(usage)))
    (bad,) = [c for c in out["calls"] if c["model"].split("@")[0] == "bad"]
    assert bad["status"] == "ok" and bad["output"] == "hi there"
    assert bad["prompt_tokens"] == 0


def answer_with_message(message: str, extra: str = "") -> bytes:
    """A plain answer whose message is `message` (JSON text), `extra` after its usage."""
    return (
        '{"id": "x", "object": "chat.completion", "created": 0, "model": "bad", "choices": '
        f'[{{"index": 0, "message": {message}, "finish_reason": "stop"}}], '
        f'"usage": {{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}{extra}}}'
    ).encode()


DEEP = 10**5
UNREADABLE = {
    "JSON nested too deep": answer_with_message("{}", f', "x": {"[" * DEEP}{"]" * DEEP}'),
    "a number of too many digits": answer_with_message("{}", f', "x": {"9" * 10**5}'),
    "bytes that are not UTF-8": answer_with_message(
        '{"role": "assistant", "content": "hi"}'
    ).replace(b"hi", b"h\xff\xfe"),
}


@pytest.mark.parametrize("what", list(UNREADABLE))
def test_an_unreadable_answer_fails_its_call_in_one_sentence_and_the_run_goes_on(what):
    out, server = run_with(FaultProfile(raw_body=UNREADABLE[what]))
    error = failed_call(out)["error"]
    assert error == f"UpstreamResponseError: bad@{server.url} sent an answer of {what}"
    assert server.requests["bad"] == 1  # not retried: it sends the same again
    assert out["messages"][-1].content.startswith("agg answer")


MALFORMED = {
    "IndexError": answer_with_message("{}").replace(b'[{"index"', b'[], "_": [{"index"'),
    "ValidationError": answer_with_message('{"role": "assistant", "content": {"a": 1}}'),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_answer_fails_its_own_call_and_the_run_goes_on(kind):
    out, _ = run_with(FaultProfile(raw_body=MALFORMED[kind]))
    assert failed_call(out)["error"].startswith(f"{kind}: ")
    assert out["messages"][-1].content.startswith("agg answer")


def streamed_answer(delta: str, extra: str = "") -> bytes:
    """A streamed answer of one event whose delta is `delta` (JSON text), `extra` after it."""
    event = (
        '{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "bad", '
        f'"choices": [{{"index": 0, "delta": {delta}, "finish_reason": null}}]{extra}}}'
    )
    return f"data: {event}\n\ndata: [DONE]\n\n".encode()


UNREADABLE_STREAMS = {
    "JSON nested too deep": streamed_answer(
        '{"content": "hi"}', f', "x": {"[" * DEEP}{"]" * DEEP}'
    ),
    "a number of too many digits": streamed_answer('{"content": "hi"}', f', "x": {"9" * 10**5}'),
    "bytes that are not UTF-8": streamed_answer('{"content": "hi"}').replace(b"hi", b"h\xff\xfe"),
}


@pytest.mark.parametrize("what", list(UNREADABLE_STREAMS))
def test_an_unreadable_streamed_answer_fails_its_call_in_one_sentence(what):
    # The SDK decodes a stream's bytes itself, before its JSON parser sees them: a byte
    # that is not UTF-8 failed the call with a bare UnicodeDecodeError, naming no model.
    # The aggregator's call is the one streamed; the best proposal answers for it.
    async def streamed(graph) -> dict:
        out: dict = {}
        async for mode, chunk in graph.astream(
            {"messages": [("user", "hi")]}, stream_mode=["messages", "values"]
        ):
            if mode == "values":
                out = chunk
        return out

    with FaultServer({"bad": FaultProfile(raw_body=UNREADABLE_STREAMS[what])}) as server:
        config = MoAConfig(
            proposers=[f"good@{server.url}", f"fine@{server.url}"],
            aggregator=f"bad@{server.url}",
            layers=2,
        )
        out = asyncio.run(asyncio.wait_for(streamed(create_moa_graph(config)), BOUND_S))
    error = failed_call(out)["error"]
    assert error == f"UpstreamResponseError: bad@{server.url} sent an answer of {what}"
    assert server.requests["bad"] == 1
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "best_proposal"


@pytest.mark.parametrize("bound", [CAP // 5, 4 * CAP])
def test_an_operator_sets_the_answer_bound_in_the_environment(monkeypatch, bound):
    # The bound was a module constant: an operator whose model writes longer answers (one of
    # 128,000 tokens, streamed, is about 35 MB) could not raise it, nor lower it.
    monkeypatch.setenv("MOA_MAX_RESPONSE_BYTES", str(bound))
    out, _ = run_with(FaultProfile(flood_bytes=2 * CAP))
    failed = [c for c in out["calls"] if c["status"] != "ok"]
    if bound < 2 * CAP:
        assert f"sent an answer of more than {bound:,} bytes" in failed_call(out)["error"]
    else:
        assert failed == []


@pytest.mark.parametrize("client_of", [own_async_client, own_sync_client])
@pytest.mark.parametrize("given", ["0", "-5", "32MB", "1.5"])
def test_an_answer_bound_that_is_no_number_of_bytes_is_refused_naming_it(
    monkeypatch, client_of, given
):
    monkeypatch.setenv("MOA_MAX_RESPONSE_BYTES", given)
    with pytest.raises(MoAConfigError, match=f"MOA_MAX_RESPONSE_BYTES must be .* got '{given}'"):
        client_of()


def _error_call(server_url: str, transport: str) -> openai.APIStatusError:
    """Call model "bad" once with the transport named; return the error it fails with."""
    messages = [{"role": "user", "content": "hi"}]
    if transport == "sync":
        client = openai.OpenAI(
            base_url=server_url, api_key="x", http_client=own_sync_client(), max_retries=0
        )
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="bad", messages=messages)
        return caught.value

    async def call() -> None:
        client = openai.AsyncOpenAI(
            base_url=server_url, api_key="x", http_client=own_async_client(), max_retries=0
        )
        await client.chat.completions.create(model="bad", messages=messages)

    with pytest.raises(openai.APIStatusError) as caught:
        asyncio.run(asyncio.wait_for(call(), BOUND_S))
    return caught.value


@pytest.mark.parametrize("transport", ["aiohttp", "httpx", "sync"])
def test_a_compressed_error_body_is_read_only_up_to_its_bound(monkeypatch, transport):
    # The answer bound held only below status 400: an error body was read whole, then cut,
    # so a gzip 500 of 292 KB inflated to 300 MB in memory. Here 20 KB inflate to 20 MB,
    # and the error bound is lowered to 10 KB: what was held at once shows which was read.
    import tracemalloc

    monkeypatch.setattr(_http, "MAX_ERROR_BODY_BYTES", 10_000)
    if transport != "sync":
        monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    bomb = gzip.compress(b'{"error": "' + b" " * (20 * CAP) + b'"}')
    profile = FaultProfile(raw_body=bomb, raw_status=500, headers={"content-encoding": "gzip"})
    with FaultServer({"bad": profile}) as server:
        _error_call(server.url, transport)  # the clients and their imports, made once
        tracemalloc.start()
        try:
            error = _error_call(server.url, transport)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert error.status_code == 500
    assert len(error.response.content) <= 10_000
    assert peak < 5 * CAP, peak  # the whole body is 20 * CAP


def test_a_redirect_of_a_long_named_model_keeps_its_fix_in_the_failed_calls_line():
    # The error named the model whole and the redirect's target (200 characters) before
    # the fix: cut to a failed call's 300 characters, the line lost the fix.
    from langgraph_moa._redact import describe_error

    model = "org/" + "a-very-long-model-name-" * 12
    with FaultServer() as elsewhere:
        target = f"{elsewhere.url}/chat/completions?route=" + "r" * 300
        with FaultServer({model: FaultProfile(redirect_to=target)}) as server:
            client = openai.OpenAI(
                base_url=server.url, api_key="x", http_client=own_sync_client(), max_retries=0
            )
            with pytest.raises(Exception) as caught:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
    error = caught.value
    error = error if isinstance(error, UpstreamResponseError) else error.__cause__
    line = describe_error(error)
    assert "name the endpoint's final URL in the config" in line, line
    assert "org/a-very-long-model-name" in line and "127.0.0.1:" in line, line
