"""How runs fail: retried or not, typed errors, no "None" reference, kept work, clear fixes."""

import asyncio

import openai
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import (
    AggregatorFailedError,
    AllProposersFailedError,
    MissingAPIKeyError,
    MoAConfig,
    RetrySettings,
    create_moa_graph,
)
from tests.helpers import IMAGE_QUESTION, QUESTION, references_in

FAST_RETRY = RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False)


def always(exc):
    return lambda n, msgs: exc


def test_one_failed_proposer_does_not_end_the_run_and_none_is_never_rendered(fake, log):
    bad = fake("BAD", fail=always(ValueError("model exploded")))
    config = MoAConfig(
        proposers=[fake("A"), bad, fake("C")], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY
    )
    out = create_moa_graph(config).invoke(QUESTION)
    refs = references_in(log.by("AGG")[0])
    assert refs == ["A #1", "C #1"]
    assert "None" not in log.by("AGG")[0].messages[0].text
    failed = [c for c in out["calls"] if c["status"] == "failed"]
    assert len(failed) == 1 and "model exploded" in failed[0]["error"]
    assert out["usage"]["total"]["failed"] == 1


def test_transient_errors_are_retried_permanent_ones_are_not(fake, log):
    flaky = fake("FLAKY", fail=lambda n, msgs: ConnectionError("reset") if n < 3 else None)
    permanent = fake("PERM", fail=always(ValueError("bad request")))
    config = MoAConfig(
        proposers=[flaky, permanent], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.by("FLAKY")) == 3  # two failures, then success
    assert len(log.by("PERM")) == 1
    assert [c["status"] for c in out["calls"][:2]] == ["ok", "failed"]
    assert len(log.by("AGG")) == 1  # the layer joined once despite the mixed outcome


@pytest.mark.parametrize(
    "bug", [AttributeError("'NoneType' object has no attribute 'x'"), AssertionError("unreachable")]
)
def test_a_bug_in_code_is_tried_once_not_retried(fake, log, bug):
    """LangGraph's default retry rule retries every error it does not list, AttributeError
    and AssertionError among them: a bug in a model's code was tried again and again, and a
    bug in a node's own body (where the node's RetryPolicy alone decides) up to 20 times with
    backoff, holding the run for minutes. A bug never passes on a second try."""
    from langgraph_moa.providers._retry import is_retryable

    assert not is_retryable(bug)
    buggy = fake("BUGGY", fail=always(bug))
    config = MoAConfig(
        proposers=[buggy, fake("B")], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY
    )
    create_moa_graph(config).invoke(QUESTION)
    assert len(log.by("BUGGY")) == 1


def _raised_in(module, exc):
    """Return `exc` as raised by code of `module` (as aiohttp's own ``assert`` raises it)."""
    try:
        exec("raise exc", {"__name__": module, "exc": exc})
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    "module",
    [
        "aiohttp.client",
        "httpcore._async.connection_pool",
        # The openai SDK (3.x) is built on httpx2, whose transport is httpcore2.
        "httpcore2._async.connection_pool",
        "httpx2._client",
    ],
)
def test_an_assertion_inside_the_http_client_on_a_dropped_connection_is_retried(fake, log, module):
    """aiohttp (``assert conn.protocol is not None``) and httpcore (``assert self.connection
    is not None``) raise AssertionError when a connection is lost at the wrong moment, and
    the SDKs pass it on unwrapped: that is a dropped connection, not a bug in the call, so it
    is retried as one; the same error from any other code is still tried once."""
    from langgraph_moa.providers._retry import is_retryable

    assert is_retryable(_raised_in(module, AssertionError()))
    assert not is_retryable(_raised_in("langgraph_moa.graph._nodes", AssertionError()))
    assert not is_retryable(_raised_in("aiohttp_x", AttributeError("x")))
    flaky = fake(
        "FLAKY", fail=lambda n, msgs: _raised_in(module, AssertionError()) if n < 2 else None
    )
    config = MoAConfig(proposers=[flaky], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY)
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.by("FLAKY")) == 2
    assert out["calls"][0]["status"] == "ok"


def test_a_bug_in_a_nodes_own_body_fails_the_run_at_once(fake, monkeypatch):
    from langgraph_moa.graph import _nodes

    tries = []

    def broken(calls):
        tries.append(calls)
        raise AttributeError("'NoneType' object has no attribute 'usage'")

    monkeypatch.setattr(_nodes, "summarize", broken)
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY)
    with pytest.raises(AttributeError):
        create_moa_graph(config).invoke(QUESTION)
    assert len(tries) == 1  # the aggregate node, not retried by its RetryPolicy


def test_openai_rate_limit_is_retried_authentication_is_not():
    import httpx

    from langgraph_moa.providers._retry import is_retryable

    request = httpx.Request("POST", "http://x/v1/chat/completions")

    def status(code):
        return openai.APIStatusError("e", response=httpx.Response(code, request=request), body=None)

    assert is_retryable(status(429)) and is_retryable(status(503))
    assert not is_retryable(status(400)) and not is_retryable(status(401))
    assert is_retryable(openai.APITimeoutError(request=request))


@pytest.mark.parametrize("status,retry", [(429, True), (503, True), (400, False), (401, False)])
def test_an_httpx_status_error_is_retried_as_the_sdk_errors_are(status, retry):
    """langchain-mistralai (and other httpx-based integrations) raise httpx.HTTPStatusError."""
    import httpx

    from langgraph_moa.providers._retry import is_retryable

    request = httpx.Request("POST", "https://api.mistral.ai/v1/chat/completions")
    response = httpx.Response(status, request=request)
    error = httpx.HTTPStatusError(f"Error response {status}", request=request, response=response)
    assert is_retryable(error) is retry


def test_a_garbled_body_that_came_with_a_200_is_still_retried():
    """The openai SDK hangs the 200 response on a JSONDecodeError: the status is no cause."""
    import json
    import types

    from langgraph_moa.providers._retry import is_retryable

    error = json.JSONDecodeError("Unterminated string", '{"a": "', 6)
    error.response = types.SimpleNamespace(status_code=200, headers={})
    assert is_retryable(error)


def _status_error(status: int, retry_after: str) -> openai.APIStatusError:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx.Response(status, headers={"retry-after": retry_after}, request=request)
    kind = {429: openai.RateLimitError, 401: openai.AuthenticationError}[status]
    return kind("refused", response=response, body=None)


class _Raising(FakeListChatModel):
    error: object = None

    def _generate(self, *args, **kwargs):
        raise self.error

    async def _agenerate(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_malformed_retry_after_is_ignored_and_the_rate_limit_error_kept(value):
    """A negative wait crashed time.sleep (hiding the 429) and NaN hung the async sleep."""
    from langgraph_moa.providers._retry import retry_after_s
    from langgraph_moa.run._calls import acall_model, call_model

    error = _status_error(429, value)
    assert retry_after_s(error) is None
    model = _Raising(responses=["x"], error=error)
    with pytest.raises(openai.RateLimitError):
        call_model(model, [HumanMessage("hi")], "m", timeout=5.0, own_timeout=True)

    async def main():
        call = acall_model(model, [HumanMessage("hi")], "m", None)
        return await asyncio.wait_for(call, 30)  # a hang bound only: NaN slept for ever

    with pytest.raises(openai.RateLimitError):
        asyncio.run(main())


def test_a_valid_retry_after_is_read_as_given():
    from langgraph_moa.providers._retry import retry_after_s

    assert retry_after_s(_status_error(429, "2.5")) == 2.5
    assert retry_after_s(_status_error(429, "3600")) == 3600.0
    assert retry_after_s(_status_error(429, "0")) is None


def test_a_non_retryable_error_is_not_delayed_by_its_retry_after(monkeypatch):
    """No retry follows a 401, so the Retry-After it carries must not hold the call."""
    from langgraph_moa.run import _calls

    slept = []
    monkeypatch.setattr(_calls.time, "sleep", slept.append)
    model = _Raising(responses=["x"], error=_status_error(401, "3"))
    with pytest.raises(openai.AuthenticationError):
        _calls.call_model(model, [HumanMessage("hi")], "m", timeout=5.0, own_timeout=True)
    with pytest.raises(openai.AuthenticationError):
        asyncio.run(_calls.acall_model(model, [HumanMessage("hi")], "m", None))
    assert slept == []
    model.error = _status_error(429, "3")  # a retryable one still waits
    with pytest.raises(openai.RateLimitError):
        _calls.call_model(model, [HumanMessage("hi")], "m", timeout=5.0, own_timeout=True)
    assert slept == [3.0]


def _count_retry_after_waits(monkeypatch, seconds: float) -> list[float]:
    """Record (and skip) the waits of `seconds` the call layer makes; other sleeps happen."""
    from langgraph_moa.run import _calls

    slept: list[float] = []
    real_sleep, real_asleep = _calls.time.sleep, _calls.asyncio.sleep

    def sleep(s):
        slept.append(s) if s == seconds else real_sleep(s)

    async def asleep(s, *args, **kwargs):
        if s == seconds:
            slept.append(s)
            return None
        return await real_asleep(s, *args, **kwargs)

    monkeypatch.setattr(_calls.time, "sleep", sleep)
    monkeypatch.setattr(_calls.asyncio, "sleep", asleep)
    return slept


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retry_after_is_waited_out_between_attempts_never_after_the_last(
    fake, log, monkeypatch, mode
):
    """The last attempt's Retry-After held the failure for nothing: no retry followed it."""
    slept = _count_retry_after_waits(monkeypatch, 3.0)
    record = _rate_limited_run(fake, "3", max_attempts=2, mode=mode)
    assert (record["status"], record["attempts"]) == ("failed", 2)
    assert len(log.by("LIMITED")) == 2
    assert slept == [3.0]  # before attempt 2 only


def _rate_limited_run(fake, retry_after: str, max_attempts: int, mode: str):
    """Run a graph with a proposer that always answers 429; return that proposer's record."""
    limited = fake("LIMITED", fail=always(_status_error(429, retry_after)))
    config = MoAConfig(
        proposers=[fake("A"), limited],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=max_attempts, initial_interval=0.0, jitter=False),
    )
    graph = create_moa_graph(config)
    out = graph.invoke(QUESTION) if mode == "sync" else asyncio.run(graph.ainvoke(QUESTION))
    [record] = [c for c in out["calls"] if c["configured_model"] == "LIMITED"]
    return record


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retry_after_longer_than_the_longest_wait_fails_at_once(fake, log, monkeypatch, mode):
    """A 429 asking for an hour was waited 60 s per attempt (2 minutes with the default
    retries) and then failed anyway: the wait was cut short of what the provider asked, so
    the retry was refused again. It fails at once now, saying why."""
    from langgraph_moa.providers._retry import MAX_RETRY_AFTER_S

    slept = _count_retry_after_waits(monkeypatch, MAX_RETRY_AFTER_S)
    record = _rate_limited_run(fake, "3600", max_attempts=3, mode=mode)
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert len(log.by("LIMITED")) == 1
    assert record["error"].startswith("RetryPastDeadlineError: LIMITED asked to be retried after")
    assert f"longer than the {MAX_RETRY_AFTER_S:g}s" in record["error"]
    assert slept == []


def test_an_aggregators_retry_after_past_the_longest_wait_keeps_its_fix_in_the_summary(fake):
    """`moa serve` answers a failed aggregator with a 502 whose message is the error's
    summary, which kept 200 characters of the error: for an endpoint's label (its model and
    URL) the sentence of a Retry-After of 61 s lost its fix, "try again later...". The label
    is shortened as an explained failure's is, never the fix."""
    from langgraph_moa._redact import LABEL_CHARS

    label = "my-org/Meta-Llama-3.1-70B-Instruct-Turbo@https://gateway.example.com/v1"
    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake(label, fail=always(_status_error(429, "61"))),
        layers=2,
        on_aggregator_failure="raise",
        retry=FAST_RETRY,
    )
    with pytest.raises(AggregatorFailedError) as raised:
        create_moa_graph(config).invoke(QUESTION)
    summary = raised.value.summary
    assert "RetryPastDeadlineError: " + label[: LABEL_CHARS - 1] in summary, summary
    assert "asked to be retried after 61s, longer than the 60s a call waits" in summary
    assert summary.endswith("try again later, or use another model or endpoint."), summary


def test_a_single_attempt_is_not_held_by_its_retry_after(fake, monkeypatch):
    slept = _count_retry_after_waits(monkeypatch, 3.0)
    config = MoAConfig(
        proposers=[fake("A"), fake("LIMITED", fail=always(_status_error(429, "3")))],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert [c["status"] for c in out["calls"][:2]] == ["ok", "failed"]
    assert slept == []


def test_all_proposers_failing_never_calls_the_aggregator_and_shows_each_error(fake, log):
    config = MoAConfig(
        proposers=[
            fake("A", fail=always(ValueError("quota exceeded for A"))),
            fake("B", fail=always(ValueError("model B not found"))),
        ],
        aggregator=fake("AGG"),
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError) as err:
        create_moa_graph(config).invoke(QUESTION)
    assert log.by("AGG") == []
    message = str(err.value)
    assert "quota exceeded for A" in message and "model B not found" in message
    assert len(err.value.calls) == 2


def test_empty_proposal_is_a_failure_not_an_empty_reference(fake, log):
    empty = fake("EMPTY", reply=lambda *a: "   ")
    config = MoAConfig(
        proposers=[fake("A"), empty], aggregator=fake("AGG"), layers=2, retry=FAST_RETRY
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert references_in(log.by("AGG")[0]) == ["A #1"]
    assert out["calls"][1]["status"] == "failed"


def test_a_call_that_answered_but_was_refused_counts_its_tokens(fake, log):
    """An empty answer, or one not in the requested structure, was still paid for."""
    from pydantic import BaseModel

    from tests.fakes import words

    class City(BaseModel):
        city: str

    config = MoAConfig(
        proposers=[fake("A"), fake("EMPTY", reply=lambda *a: "")],
        aggregator=fake("AGG", reply=lambda *a: "not json"),
        aggregator_fallbacks=[fake("AGG2", reply=lambda *a: '{"city": "Paris"}')],
        layers=2,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config, response_format=City).invoke(QUESTION)
    refused = {c["configured_model"]: c for c in out["calls"] if c["status"] == "failed"}
    assert set(refused) == {"EMPTY", "AGG"}
    assert refused["EMPTY"]["prompt_tokens"] == words(log.by("EMPTY")[0].messages) > 0
    assert refused["AGG"]["completion_tokens"] == 2  # "not json"
    assert out["usage"]["total"]["prompt_tokens"] == sum(words(c.messages) for c in log.calls)


def test_aggregator_failure_is_typed_and_keeps_the_proposals(fake):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", fail=always(ValueError("context too long"))),
        retry=FAST_RETRY,
        on_aggregator_failure="raise",
    )
    with pytest.raises(AggregatorFailedError) as err:
        create_moa_graph(config).invoke(QUESTION)
    assert "context too long" in str(err.value)
    assert [c["output"] for c in err.value.calls if c["layer"] == 2] == ["A #2", "B #2"]


def test_completed_work_survives_in_the_checkpoint(fake):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", fail=always(ValueError("down"))),
        layers=2,
        retry=FAST_RETRY,
        on_aggregator_failure="raise",
    )
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t1"}}
    with pytest.raises(AggregatorFailedError):
        graph.invoke(QUESTION, thread)
    calls = graph.get_state(thread).values["calls"]
    assert [c["output"] for c in calls] == ["A #1", "B #1"]


def test_proposer_token_cap_never_caps_the_aggregator(fake, log):
    shared = fake("M")
    config = MoAConfig(
        proposers=[{"model": shared, "max_tokens": 64, "temperature": 0.9}],
        aggregator={"model": shared, "max_tokens": 4096, "temperature": 0.0},
        variant="single-proposer",
    )
    create_moa_graph(config).invoke(QUESTION)
    proposer_call, aggregator_call = log.calls
    assert (proposer_call.max_tokens, proposer_call.temperature) == (64, 0.9)
    assert (aggregator_call.max_tokens, aggregator_call.temperature) == (4096, 0.0)
    assert shared.max_tokens is None  # the user's instance is left alone


def test_missing_api_key_fails_before_any_call_with_the_fix(fake, log):
    config = MoAConfig(proposers=[fake("A"), "openai:gpt-4o-mini"], aggregator=fake("AGG"))
    graph = create_moa_graph(config)  # building needs no key
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        graph.invoke(QUESTION)
    assert log.calls == []


async def test_a_failure_in_every_layer_still_joins_each_layer_once_async(fake, log):
    bad = fake("BAD", fail=always(ValueError("nope")))
    config = MoAConfig(
        proposers=[fake("A"), bad, fake("C")], aggregator=fake("AGG"), layers=3, retry=FAST_RETRY
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert [c.label for c in log.calls].count("A") == 2
    assert len(log.calls) == 7
    assert [c["status"] for c in out["calls"]].count("failed") == 2
    assert references_in(log.by("AGG")[0]) == ["A #2", "C #2"]


def context_overflow():
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    body = {
        "message": "This model's maximum context length is 4096 tokens, however you requested 5000 tokens",
        "code": "context_length_exceeded",
    }
    return openai.BadRequestError(
        body["message"], response=httpx.Response(400, request=request), body=body
    )


def test_context_overflow_is_explained_and_not_retried(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=lambda n, m: context_overflow()), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.by("A")) == 1
    error = out["calls"][0]["error"]
    assert error.startswith("ContextLengthError: The input is too long for A")
    assert "The provider said: This model's maximum context length" in error
    assert "shorten the conversation" in error
    # The config field that fixes it, named with the model: with no context_window the
    # references reach the model untrimmed.
    assert "too long for A (its context holds 4096 tokens). Set its context_window in" in error


def test_a_context_error_names_context_window_within_a_failed_calls_line():
    """The record's line is cut at 300 characters: the fix survives the longest label."""
    from langgraph_moa._redact import LABEL_CHARS, describe_error
    from langgraph_moa.providers._retry import explain_failure

    label = "x" * (LABEL_CHARS + 20)
    line = describe_error(explain_failure(context_overflow(), label, []))
    assert "context_window" in line and "a model with a longer context." in line


def test_anthropics_prompt_too_long_is_a_context_error_with_its_size():
    # Anthropic words its overflow "prompt is too long: N tokens > M maximum": it was
    # relayed bare, as no context error, so nothing said to shorten the input.
    from langgraph_moa.errors import ContextLengthError
    from langgraph_moa.providers._retry import explain_failure

    class BadRequestError(Exception):  # the anthropic SDK's, as its str() reads
        status_code = 400

    message = "prompt is too long: 208310 tokens > 200000 maximum"
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    error = BadRequestError(f"Error code: 400 - {body}")
    said = explain_failure(error, "anthropic:claude-sonnet-4-5", [])
    assert isinstance(said, ContextLengthError), said
    assert str(said).startswith(
        "The input is too long for anthropic:claude-sonnet-4-5 (its context holds 200000 tokens)."
    ), said


def test_a_conversation_too_long_for_every_model_names_the_fix(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=lambda n, m: context_overflow())],
        aggregator=fake("AGG"),
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError, match="too long for A"):
        create_moa_graph(config).invoke(QUESTION)
    assert log.by("AGG") == []


def rate_limited():
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    return openai.RateLimitError(
        "Rate limit reached", response=httpx.Response(429, request=request), body=None
    )


def test_a_run_whose_aggregator_overflowed_is_the_clients_though_a_proposer_was_rate_limited(
    fake, log
):
    # Layer 1's B was rate-limited; layer 2's proposers and then the aggregator refused their
    # input (the references) as too long. Sent again the run ends the same way: a 400 to
    # shorten it, not a 502 that an SDK retries and pays for again.
    from langgraph_moa.errors import outgrew_context
    from langgraph_moa.serving._errors import _api_error

    def with_references(n, msgs):  # layer 2's proposers and the aggregator get references
        return context_overflow() if msgs[0].type == "system" else None

    def b(n, msgs):
        return with_references(n, msgs) if msgs[0].type == "system" else rate_limited()

    config = MoAConfig(
        proposers=[fake("A", fail=with_references), fake("B", fail=b)],
        aggregator=fake("AGG", fail=with_references),
        on_aggregator_failure="raise",
        layers=2,
        retry=FAST_RETRY,
    )
    with pytest.raises(AggregatorFailedError) as caught:
        create_moa_graph(config).invoke(QUESTION)
    errors = [c["error"] or "" for c in caught.value.calls if c["status"] == "failed"]
    assert any("Rate limit" in e for e in errors), errors  # the 429 is among the run's calls
    assert outgrew_context(caught.value)
    answer = _api_error(caught.value)
    assert (answer.status, answer.code) == (400, "context_length_exceeded")
    assert "context_window" in answer.message  # the proposals overflowed, not the question


def test_a_layer_that_overflowed_is_the_clients_though_an_earlier_layer_was_rate_limited():
    # A layer that ends the run (chunk-wise aggregation's streamed last layer) is judged by
    # its own calls: an earlier layer's 429 does not make resending it any use.
    from langgraph_moa.errors import ContextLengthError, outgrew_context
    from langgraph_moa.run._accounting import failed_record

    def failed(layer, proposer, error):
        return failed_record(
            role="proposer",
            layer=layer,
            proposer=proposer,
            sample=0,
            configured_model="AB"[proposer],
            error=error,
        )

    too_long = ContextLengthError("The input is too long")
    calls = [failed(1, 1, rate_limited()), failed(2, 0, too_long), failed(2, 1, too_long)]
    assert outgrew_context(AllProposersFailedError(2, calls))
    assert not outgrew_context(AllProposersFailedError(1, calls))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_lone_failing_call_never_ends_a_run_silently(fake, mode):
    """Regression: with LangGraph's error_handler, the goto of a handled failure was lost now
    and then when the failed task was alone in its step (about 1 run in 7), and the run ended
    with neither answer nor error. Nodes now record their own final failures."""
    for _ in range(40):
        lone = MoAConfig(
            proposers=[fake("A", fail=always(ValueError("x")))],
            aggregator=fake("AGG"),
            retry=FAST_RETRY,
        )
        graph = create_moa_graph(lone)
        with pytest.raises(AllProposersFailedError):
            graph.invoke(QUESTION) if mode == "sync" else await graph.ainvoke(QUESTION)
        chain = MoAConfig(
            proposers=[fake("A")],
            aggregator=fake("DOWN", fail=always(ValueError("down"))),
            aggregator_fallbacks=[fake("UP")],
            retry=FAST_RETRY,
        )
        graph = create_moa_graph(chain)
        out = graph.invoke(QUESTION) if mode == "sync" else await graph.ainvoke(QUESTION)
        assert out["messages"][-1].response_metadata["moa"]["answered_by"] == "UP"


def test_an_overflow_of_the_proposals_names_the_operators_fix_not_only_fewer_messages():
    # A remote model with no context_window gets every proposal untrimmed: the aggregator or
    # a later layer overflowed while the conversation itself fit, and the 400 said only
    # "send fewer or shorter messages", which a one-line question cannot.
    from langgraph_moa.errors import ContextLengthError
    from langgraph_moa.run._accounting import failed_record
    from langgraph_moa.serving._errors import _api_error

    too_long = ContextLengthError("The input is too long")

    def overflowed(layer):
        calls = [
            failed_record(
                role="proposer",
                layer=layer,
                proposer=0,
                sample=0,
                configured_model="A",
                error=too_long,
            )
        ]
        return _api_error(AllProposersFailedError(layer, calls)).message

    first, later = overflowed(1), overflowed(2)
    assert "fewer or shorter messages" in first and "context_window" not in first
    assert "context_window" in later and "fewer proposers or layers" in later
    assert "fewer or shorter messages" in later and "\n" not in later


def image_refused():
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    return openai.InternalServerError(  # llama.cpp refuses an image with a 500
        "Error code: 500 - image input is not supported",
        response=httpx.Response(500, request=request),
        body=None,
    )


@pytest.mark.parametrize("where", ["proposers", "aggregator"])
def test_an_image_no_model_of_the_run_can_read_is_the_clients_400_not_a_retried_502(
    fake, log, where
):
    """Every proposer (or the aggregator's chain) refused the image, and `moa serve` said 502,
    which an SDK retries twice, each refused the same way: the fix is the client's (send it
    without the image) or the operator's (a vision model)."""
    from langgraph_moa.serving._errors import _api_error

    blind = {"A": fake("A", fail=lambda n, m: image_refused()), "AGG": fake("AGG")}
    if where == "aggregator":
        blind = {"A": fake("A"), "AGG": fake("AGG", fail=lambda n, m: image_refused())}
    config = MoAConfig(
        proposers=[blind["A"]],
        aggregator=blind["AGG"],
        on_aggregator_failure="raise",
        retry=FAST_RETRY,
    )
    with pytest.raises((AllProposersFailedError, AggregatorFailedError)) as caught:
        create_moa_graph(config).invoke(IMAGE_QUESTION)
    answer = _api_error(caught.value)
    assert (answer.status, answer.code) == (400, "unsupported_content"), answer.message
    assert "without its images" in answer.message and "vision model" in answer.message
    refused = "AGG" if where == "aggregator" else "A"
    assert f"{refused} cannot read images" in answer.message  # which model, as the 502 said
    # The fix said once: the refused call's own error says it again in other words.
    assert answer.message.count("vision model") == 1, answer.message


def test_an_image_refused_beside_a_rate_limited_proposer_stays_a_502(fake, log):
    from langgraph_moa.serving._errors import _api_error

    config = MoAConfig(
        proposers=[
            fake("A", fail=lambda n, m: image_refused()),
            fake("B", fail=always(rate_limited())),
        ],
        aggregator=fake("AGG"),
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError) as caught:
        create_moa_graph(config).invoke(IMAGE_QUESTION)
    assert _api_error(caught.value).status == 502  # B may answer the same request later


@pytest.mark.parametrize(
    ("said", "refused"),
    [
        ("Messages.create() got an unexpected keyword argument 'response_format'", True),
        ("Client.chat() got an unexpected keyword argument 'response_format'", True),
        ("Malformed input request: extraneous key [response_format] is not permitted", True),
        ("Unrecognized request argument supplied: response_format", True),
        (
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
            "with this model.",
            True,
        ),
        ("Invalid schema for response_format 'Total': 'required' is missing", False),
        # A key inside response_format refused: the model takes response_format itself.
        ("Unknown parameter: 'response_format.schema'.", False),
        ("Unknown parameter: 'response_format.json_schema.strictness'.", False),
        ("extraneous key [response_format_v2] is not permitted", False),
    ],
)
def test_a_refused_response_format_names_tool_strategy_within_a_failed_calls_line(said, refused):
    # The client's words said nothing of ProviderStrategy, which sent the argument.
    from langgraph_moa._redact import LABEL_CHARS, describe_error
    from langgraph_moa.errors import UnsupportedParameterError
    from langgraph_moa.providers._retry import explain_failure

    explained = explain_failure(TypeError(said), "x" * (LABEL_CHARS + 20), [])
    assert isinstance(explained, UnsupportedParameterError) == refused
    if refused:
        assert "use ToolStrategy" in describe_error(explained)
