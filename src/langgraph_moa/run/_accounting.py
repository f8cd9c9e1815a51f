"""Provenance and token accounting: one honest record per call, totals per layer and run."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, BaseMessage

from langgraph_moa._redact import describe_error
from langgraph_moa._unicode import beginning, well_formed
from langgraph_moa.errors import (
    ContentFilteredError,
    EmptyResponseError,
    StragglerCancelledError,
)
from langgraph_moa.errors import _RejectedAnswer as RejectedAnswer
from langgraph_moa.providers import _table
from langgraph_moa.run.state import (
    CallRecord,
    LayerTotals,
    Role,
    TokenTotals,
    ToolCallRecord,
    UsageSummary,
)
from langgraph_moa.text._prompts import (
    CUT_OFF_MARK,
    estimate_prompt_tokens,
    estimate_tokens,
    text_a_model_reads,
)
from langgraph_moa.text._thinking import THINK_CLOSE, THINK_OPEN, Thinking, split_thinking


def tool_calls_of(response: BaseMessage) -> list[ToolCallRecord]:
    """Return the tool calls a response asked for (none for a text answer)."""
    calls = response.tool_calls if isinstance(response, AIMessage) else []
    return [ToolCallRecord(name=c["name"], args=dict(c["args"]), id=c.get("id")) for c in calls]


def answering_model(response: BaseMessage, configured: str) -> str:
    """Return the model that really answered, as the provider reported it.

    Providers put it in ``response_metadata["model_name"]`` (OpenAI, Together, llama.cpp) or
    ``["model"]``; a router or fallback answering with another model shows up here, not as
    the configured one.
    """
    meta = response.response_metadata or {}
    for key in _table.current.model_name_keys:  # `in`: a key not there costs no call
        if key in meta and isinstance(value := meta[key], str) and value:
            return value
    return configured


def token_logprobs(response: BaseMessage) -> list[float]:
    """Return the logprob of each generated token, where the provider reported them.

    OpenAI-compatible servers (OpenAI, vLLM, llama.cpp) put them in
    ``response_metadata["logprobs"]["content"]`` when the call asked for ``logprobs``.
    """
    logprobs = (response.response_metadata or {}).get("logprobs")
    if not logprobs:  # most calls ask for none: no check and no list made for them
        return []
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return [
        float(t["logprob"])
        for t in content or []
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)
    ]


FILTERED_REASONS = frozenset(
    {
        "content_filter",
        "refusal",
        "safety",
        "recitation",
        "prohibited_content",
        "blocklist",
        "spii",
        "image_safety",
        "image_prohibited_content",
        "image_recitation",
    }
)
"""Finish reasons that mean the provider's content filter stopped the answer: OpenAI,
Azure and OpenAI-compatible servers say "content_filter", Anthropic "refusal", Gemini
(compared in lower case) "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII" (a filter or
term list withheld it), "RECITATION" (generation stopped for reciting source material, so
the text is cut) and "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION" (the
same, for image output). Gemini's "LANGUAGE", "MALFORMED_FUNCTION_CALL" and "OTHER" are no
filter and stay out."""

CUT_OFF_REASONS = frozenset({"length", "max_tokens"})
"""Finish reasons that mean `max_tokens` ended the answer: OpenAI-compatible servers
(OpenAI, llama.cpp, vLLM, Together) say "length", Anthropic "max_tokens", Gemini
"MAX_TOKENS" (compared in lower case)."""

TOOL_CALL_REASONS = frozenset({"tool_calls", "tool_use", "function_call"})
"""Finish reasons that say the model stopped to call tools: OpenAI's (and the older
"function_call"), Anthropic's "tool_use"."""


def finish_reason(response: BaseMessage) -> str | None:
    """Return why generation stopped, as the provider reported it.

    A cut-off answer (`CUT_OFF_REASONS`) ends mid-working: its last number is a step, not
    the result, which is why selection leaves such proposals out of the vote.
    """
    meta = response.response_metadata or {}
    for key in _table.current.finish_reason_keys:  # `in`: a key not there costs no call
        if key in meta and isinstance(value := meta[key], str) and value:
            return value
    return None


def refuse_filtered(response: BaseMessage, label: str) -> None:
    """Raise `ContentFilteredError` when the provider's content filter stopped `response`.

    Its text, if any, is what was left when the filter stopped it: taken as a proposal, a
    part of a chunk-wise answer or the answer, it would read as a whole one, with nothing
    said. The error keeps the response, so its tokens are counted.

    A model that refused in OpenAI's shape (no content, the reason in ``refusal``, which
    langchain-openai keeps in ``additional_kwargs``) fails with `EmptyResponseError` that
    quotes the refusal: "returned an empty answer" hid that the model had refused, and why.
    """
    kwargs = response.additional_kwargs
    # `in` first: most answers have no refusal, and a lookup is a function call more for each
    refusal = kwargs["refusal"] if "refusal" in kwargs else None
    if isinstance(refusal, str) and refusal.strip():
        said = well_formed(refusal.strip())
        raise EmptyResponseError(
            f"{label} refused to answer ({beginning(said, 200)!r}): a refusal is "
            "no reference and no answer; rephrase the request or use another model",
            response,
        )
    reason = finish_reason(response)
    if reason is not None and reason.lower() in FILTERED_REASONS:
        raise ContentFilteredError(
            f"{label}'s answer was stopped by its provider's content filter "
            f"(finish_reason {reason!r}): it is no reference and no answer; rephrase the "
            "request or use another model",
            response,
        )


_Message = TypeVar("_Message", bound=BaseMessage)


def without_thinking(response: _Message, label: str) -> _Message:
    """Return `response` with the thinking block its text opens with moved out of its text.

    A reasoning model's inline ``<think> ... </think>`` is no part of its response
    (`split_thinking`): the text keeps the answer after it, and the thinking goes to
    ``additional_kwargs["reasoning_content"]``, where the call record keeps it. Content
    given as a list of blocks (a Responses API's, Anthropic's) loses it from its text
    blocks, the others kept: a ``reasoning`` or ``thinking`` block is never text. Text
    before a lone ``</think>`` that starts or ends its line (no ``<think>`` anywhere: the
    chat template opened the block in the prompt) is thinking too.

    A block that never closed is thinking cut off (`cut_while_thinking`) unless the
    provider said the model stopped for another reason: then the text is the answer, its
    ``<think>`` its own (a reply about the tag), and is left whole (`kept_whole`), unless
    the model stopped to call tools: then the block is its thinking.

    Raises:
        EmptyResponseError: the block never closed (``max_tokens`` cut the model while it
            was thinking): there is no answer, and its thinking is none.
    """
    if not isinstance(response, AIMessage):
        return response
    # A string's own, not LangChain's accessor; `in` first: every other model's, no call made
    text = response.content if isinstance(response.content, str) else response.text
    if THINK_OPEN not in text and THINK_CLOSE not in text:
        return response
    split = split_thinking(text)  # a lone closing tag ends a block the prompt opened
    if not response.tool_calls and _cut_off(response, split):  # as `cut_while_thinking`
        raise EmptyResponseError(
            f"{label} was cut off while thinking (finish_reason "
            f"{finish_reason(response)!r}): its <think> block never closed, so it gave no "
            "answer; raise that model's max_tokens",
            response,
        )
    if split.thinking is None or (not split.closed and kept_whole(response)):
        return response
    content = _cut_text(response.content, len(text) - len(split.answer))
    # What a provider sent apart (its reasoning parser's) comes first: replaced, it was lost.
    sent = response.additional_kwargs.get("reasoning_content")
    thoughts = [t for t in (sent, split.thinking) if isinstance(t, str) and t]
    kwargs = {**response.additional_kwargs, "reasoning_content": "\n\n".join(thoughts)}
    return response.model_copy(update={"content": content, "additional_kwargs": kwargs})


def cut_while_thinking(response: BaseMessage) -> bool:
    """Tell whether the model was cut off inside the thinking block its text opens with.

    The block never closed, no tool call was made, and ``max_tokens`` ended the answer, or
    the provider did not say what did. Such a response is no answer (`without_thinking`
    fails it), and so the call cache keeps none (`run._calls.cached_call`).
    """
    if not isinstance(response, AIMessage) or response.tool_calls:
        return False
    return _cut_off(response, split_thinking(response.text))


def _cut_off(response: AIMessage, split: Thinking) -> bool:
    """`cut_while_thinking` of a response without tool calls whose text split as `split`."""
    return not split.closed and not stopped_itself(finish_reason(response))


def stopped_itself(reason: str | None) -> bool:
    """Tell whether finish reason `reason` says the model ended its text itself.

    Said, and not a cut-off (`CUT_OFF_REASONS`): a ``<think>`` block such a text opens and
    never closes is the answer's own text, kept whole (`without_thinking`), and a stream
    releases it so at its end (`ThinkingCut.finish`).
    """
    return reason is not None and not is_cut_off_reason(reason)


def keeps_block(reason: str | None) -> bool:
    """Tell whether a text that opens a ``<think>`` block and never closes it is its answer.

    Its model ended it itself (`stopped_itself`), and not to call tools (`TOOL_CALL_REASONS`):
    a model that stopped to call a tool wrote its thinking, not an answer. A stream that
    knows only the finish reason (`OneAttempt`, the page) releases the block by this rule.
    """
    return stopped_itself(reason) and str(reason).lower() not in TOOL_CALL_REASONS


def kept_whole(response: BaseMessage) -> bool:
    """Tell whether `response`'s unclosed ``<think>`` block is its own text, kept whole.

    Not where it made tool calls, whatever its finish reason (Gemini says ``STOP`` with
    them): `without_thinking` and a chunk-wise proposal's stream both go by this.
    """
    calls = isinstance(response, AIMessage) and bool(response.tool_calls)
    return not calls and keeps_block(finish_reason(response))


def _cut_text(content: str | list[Any], chars: int) -> str | list[Any]:
    """Return `content` less the first `chars` characters of its text (`BaseMessage.text`).

    The text of a list is its strings' and ``text`` blocks' joined: each loses what of
    them is cut, and goes where nothing of it is left; any other block stays.
    """
    if isinstance(content, str):
        return content[chars:]
    kept: list[Any] = []
    for block in content:
        is_text = isinstance(block, str) or (
            block.get("type") == "text" and isinstance(block.get("text"), str)
        )
        if not is_text or chars <= 0:
            kept.append(block)
            continue
        own = block if isinstance(block, str) else block["text"]
        rest, chars = own[chars:], chars - len(own)
        if rest:
            kept.append(rest if isinstance(block, str) else {**block, "text": rest})
    return kept


def empty_answer(response: BaseMessage | None, label: str) -> EmptyResponseError:
    """Return the error of an answer with no text (and no tool call): a failed call.

    Where `max_tokens` ended it (a reasoning model that thinks out of sight spent them all
    before writing), the error says so and gives the fix, which "empty answer" alone hid.
    """
    message = f"{label} returned an empty answer"
    reason = finish_reason(response) if response is not None else None
    if is_cut_off_reason(reason):
        message += (
            f" (finish_reason {reason!r}: its max_tokens ran out before it wrote any text, "
            "on reasoning if it is a reasoning model); raise that model's max_tokens"
        )
    return EmptyResponseError(message, response)


def openai_finish_reason(reason: str | None) -> str | None:
    """Return a finish reason as OpenAI spells it where `max_tokens` ended the call: "length".

    Anthropic says "max_tokens", Gemini "MAX_TOKENS": a reader of the event stream (the page)
    or an OpenAI client of `moa serve` that knows "length" would take such a cut as finished.
    Other reasons stay the provider's.
    """
    return "length" if is_cut_off_reason(reason) else reason


def is_cut_off_reason(reason: Any) -> bool:
    """Tell whether finish reason `reason` says `max_tokens` ended the text, in any spelling.

    Anything but a string (none said, a value from an event) says no.
    """
    return isinstance(reason, str) and reason.lower() in CUT_OFF_REASONS


def was_cut_off(record: CallRecord) -> bool:
    """Tell whether `max_tokens` ended this call's answer."""
    return is_cut_off_reason(record.get("finish_reason"))


def as_reference(text: str, record: CallRecord) -> str:
    """Return a call's text as the next call reads it: marked where `max_tokens` cut it.

    Unmarked, a cut proposal read as a whole one, its last words ("Step one: 6 times") as
    its conclusion. It stays a reference, for what it did say, with `CUT_OFF_MARK` after it.
    """
    return f"{text}\n{CUT_OFF_MARK}" if was_cut_off(record) else text


def ok_record(
    *,
    role: Role,
    layer: int,
    proposer: int,
    sample: int,
    configured_model: str,
    response: BaseMessage,
    latency_s: float,
    retried_errors: list[str] | None = None,
    cached: bool = False,
    prompt: Sequence[BaseMessage] = (),
    estimated: bool = False,
    tools: Callable[[], Any] | None = None,
) -> CallRecord:
    """Record a successful call, with tokens from the message's `usage_metadata`.

    `cached`: the package's call cache answered; an answer of LangChain's LLM cache is
    recorded cached too (`_tokens`). `prompt` and `tools`: the messages and tool schemas the
    call was sent (the schemas by a function, called only then), from which its tokens are
    estimated where the provider reported none (`estimated_tokens`).
    `estimated`: the usage is partly the package's estimate already (`with_estimated_usage`:
    the parts of a chunk-wise answer), so the record says so.
    """
    counted = _tokens(response)
    prompt_tokens, completion, total, from_llm_cache = counted or estimated_tokens(
        response, prompt, tools and tools()
    )
    cached = cached or from_llm_cache
    logprobs = token_logprobs(response)
    record = CallRecord(
        role=role,
        layer=layer,
        proposer=proposer,
        sample=sample,
        configured_model=configured_model,
        model=answering_model(response, configured_model),
        status="ok",
        output=well_formed(response.text),
        error=None,
        attempts=len(retried_errors or []) + 1,
        retried_errors=list(retried_errors or []),
        cached=cached,
        latency_s=round(latency_s, 4),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=total,
        mean_logprob=round(sum(logprobs) / len(logprobs), 6) if logprobs else None,
        logprob_tokens=len(logprobs),
        finish_reason=finish_reason(response),
    )
    if counted is None or estimated:
        record["usage_estimated"] = True
    _note_token_details(record, response)
    meta = response.response_metadata or {}
    # A text answer, the most common, has no tool calls and none of the marks that
    # `check_tool_calls` sets: one call (getattr) tells the first, `in` the others with none.
    if getattr(response, "tool_calls", None) and (called := tool_calls_of(response)):
        record["tool_calls"] = called  # only then: records of text answers stay as they were
    for mark, key in _RECORDED_PAIRS:
        if mark in meta and (said := meta[mark]):
            record[key] = said  # type: ignore[literal-required]
    # Kept for the record, never a reference; an empty block (Qwen3's /no_think) is none.
    kwargs = response.additional_kwargs
    if (
        "reasoning_content" in kwargs
        and isinstance(thinking := kwargs["reasoning_content"], str)
        and thinking
    ):
        record["thinking"] = well_formed(thinking)
    return record


def failed_record(
    *,
    role: Role,
    layer: int,
    proposer: int,
    sample: int,
    configured_model: str,
    error: BaseException,
    latency_s: float = 0.0,
    retried_errors: list[str] | None = None,
    paid: BaseMessage | None = None,
    estimated: bool = False,
    prompt: Sequence[BaseMessage] = (),
    tools: Any = None,
) -> CallRecord:
    """Record a failed call with the provider's own error message, summarized and redacted.

    A call that answered but whose answer was refused (empty, not the requested structure,
    or tool calls that break the bound tools) was paid for: its tokens, from the refused
    message the error keeps, count; so do those of `paid`, what a call that failed partway
    had already cost (the parts a chunk-wise aggregator wrote before one failed);
    `estimated`: as `ok_record`'s. `prompt` and `tools`: what the call was sent, whose
    tokens are estimated with the answer's where its provider reported none: that prompt was
    billed as well as what was refused.
    """
    refused = isinstance(error, RejectedAnswer)
    if paid is None and refused:
        paid = getattr(error, "response", None)
    counted = _tokens(paid)
    if counted is None and paid is None:  # no answer (a 500, a timeout): nothing was billed
        prompt, tools = (), None
    prompt_tokens, completion, total, _ = counted or estimated_tokens(paid, prompt, tools)
    record = CallRecord(
        role=role,
        layer=layer,
        proposer=proposer,
        sample=sample,
        configured_model=configured_model,
        model=configured_model,
        status="cancelled" if isinstance(error, StragglerCancelledError) else "failed",
        output=None,
        error=describe_error(error),
        attempts=len(retried_errors or []) + 1,
        retried_errors=list(retried_errors or []),
        cached=False,
        latency_s=round(latency_s, 4),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=total,
        mean_logprob=None,
        logprob_tokens=0,
        finish_reason=None,
    )
    if (counted is None and paid is not None) or estimated:  # what it wrote, estimated
        record["usage_estimated"] = True
    _note_token_details(record, paid)
    return record


TOKEN_DETAILS = ("input_token_details", "output_token_details")
"""The parts of LangChain's `UsageMetadata` that break its token counts down (cache reads,
reasoning): a call record keeps each its response reported, and the answer sums them."""


def _note_token_details(record: CallRecord, response: object) -> None:
    """Copy the response's token details onto its record, where it reported any.

    Runs once per model call: a response without details costs one call (`isinstance`),
    not a copy of its usage and two comprehensions (`benchmarks/graph_call_work.py`).
    """
    usage: Any = response.usage_metadata if isinstance(response, AIMessage) else None
    if not usage:
        return
    for key in TOKEN_DETAILS:
        if key in usage and (given := usage[key]):
            counts = {k: n for k, v in given.items() if (n := token_count(v))}
            if counts:
                record[key] = counts  # type: ignore[literal-required]


def token_details(calls: Iterable[CallRecord]) -> dict[str, dict[str, int]]:
    """Return each token detail summed over `calls`; a kind no call reported is left out.

    With the totals of `summarize`, the run's usage in LangChain's `UsageMetadata` shape:
    the details break its token counts down, they add nothing to them.
    """
    sums: dict[str, dict[str, int]] = {}
    for c in calls:
        for key in TOKEN_DETAILS:
            if key in c:  # no call made for a record without details: most of them
                mine = sums.setdefault(key, {})
                for kind, count in c[key].items():  # type: ignore[literal-required]
                    mine[kind] = mine.get(kind, 0) + count
    return sums


def _tokens(response: object) -> tuple[int, int, int, bool] | None:
    """Return a response's tokens (its `usage_metadata`) and whether LangChain's cache gave it.

    None where it reported no token count: a server that ignores ``stream_options`` (an
    older Ollama), a proxy that drops ``usage``, a model without `usage_metadata`. Read as
    0, such a call was free to the token budget and the cost report (`estimated_tokens`).

    Read with defaults: LangChain's LLM cache answers with ``{**usage, "total_cost": 0}``,
    and from a model that reports no usage that is all there is (the call failed with a
    `KeyError`). ``total_cost`` is a key LangChain adds there and no provider's usage has:
    that answer's tokens were paid for by an earlier call, as those of an answer from the
    package's own call cache. Read with ``in``, not ``get``: this runs on every call
    (benchmarks/graph_call_work.py).
    """
    usage = response.usage_metadata if isinstance(response, AIMessage) else None
    if not usage or not ("input_tokens" in usage or "output_tokens" in usage):
        return None
    prompt = token_count(usage["input_tokens"]) if "input_tokens" in usage else 0
    completion = token_count(usage["output_tokens"]) if "output_tokens" in usage else 0
    total = prompt + completion
    if "total_tokens" in usage:  # never below its parts: a lower one would escape the budget
        total = max(total, token_count(usage["total_tokens"]))
    return prompt, completion, total, "total_cost" in usage


def counted_tokens(response: object) -> tuple[int, int, int] | None:
    """Return a response's prompt, completion and total tokens as its call's record counts them.

    None where it reported no token count (`_tokens`). No count is below 0, and the total
    never below the other two, whatever the server said.
    """
    counted = _tokens(response)
    return None if counted is None else counted[:3]


STRUCTURED_MARK = "moa_structured_from_tool_calls"
"""``response_metadata`` mark of a function-calling structured answer whose text is its tool
call's arguments written out (`graph._nodes._answer_of`): what it wrote is counted once."""

TOOL_CALLS_FROM_TEXT = "moa_tool_calls_from_text"
"""``response_metadata`` mark of an answer whose tool calls were read from its text
(`run._options.read_text_tool_calls`): True."""
REFERENCE_ONLY = "moa_reference_only"
"""``response_metadata`` mark of a proposal that may be a reference but never the answer
(`run._options.check_tool_calls`): why."""
INCOMPLETE_CALL = "moa_incomplete_call"
"""``response_metadata`` mark of an answer whose tool call breaks its tool's schema
(`run._options.check_tool_calls`): which."""

RECORDED_MARKS = {
    TOOL_CALLS_FROM_TEXT: "tool_calls_from_text",
    REFERENCE_ONLY: "reference_only",
    INCOMPLETE_CALL: "incomplete_call",
}
"""The call record's key (`ok_record`) that says what each mark of a call's response said."""
_RECORDED_PAIRS = tuple(RECORDED_MARKS.items())  # read on every call: no `items()` call there

CALL_MARKS = (STRUCTURED_MARK, *RECORDED_MARKS)
"""``response_metadata`` marks the package sets on one call's response for its own use; its
call record says what they mean (`RECORDED_MARKS`). The answer, built from a call's
response, leaves them out: they are no part of the answer's public metadata
(`run._answer.final_message`)."""


def estimated_tokens(
    response: BaseMessage | None, prompt: Sequence[BaseMessage], tools: Any = None
) -> tuple[int, int, int, bool]:
    """Estimate the tokens of a call whose provider reported none, as `_tokens` returns them.

    By `estimate_tokens` (3 characters a token for English, more for other scripts): the
    prompt's messages (`text_a_model_reads`; an image, audio or file part at
    `MEDIA_PART_TOKENS`), the schemas of the `tools` it was sent, and what the model wrote (its
    text, thinking and tool calls; a structured answer's text and call once,
    `STRUCTURED_MARK`). The record says so
    (``usage_estimated``): an estimate is neither the provider's count nor a zero.
    """
    prompt_tokens = estimate_prompt_tokens(prompt, tools)
    written = ""
    if isinstance(response, AIMessage):
        thinking = response.additional_kwargs.get("reasoning_content")
        calls = "".join(str(c["args"]) for c in response.tool_calls)
        if (response.response_metadata or {}).get(STRUCTURED_MARK):
            calls = ""  # the text is these calls' arguments
        written = (
            text_a_model_reads(response) + (thinking if isinstance(thinking, str) else "") + calls
        )
    completion = estimate_tokens(written)
    usage: Any = (response.usage_metadata if isinstance(response, AIMessage) else None) or {}
    return prompt_tokens, completion, prompt_tokens + completion, "total_cost" in usage


def with_estimated_usage(
    response: AIMessage, prompt: Sequence[BaseMessage]
) -> tuple[AIMessage, bool]:
    """Return `response` with its tokens estimated where its provider reported none, and whether.

    For a call made of several requests (the parts of a chunk-wise answer, each with its own
    prompt): each part is counted as it ends, by the budget too, and the record of their sum
    cannot tell which parts were estimated, nor estimate their prompts after the fact.
    """
    if _tokens(response) is not None:
        return response, False
    prompt_tokens, completion, total, _ = estimated_tokens(response, prompt)
    usage: Any = {
        **(response.usage_metadata or {}),  # LangChain's cache mark (``total_cost``) stays
        "input_tokens": prompt_tokens,
        "output_tokens": completion,
        "total_tokens": total,
    }
    return response.model_copy(update={"usage_metadata": usage}), True


def token_count(value: object) -> int:
    """Return a provider's usage count as tokens; a value that is no count reads as 0.

    A provider's usage is untrusted: a negative count lowered the run's total, so that a
    server could keep a run under ``budget.max_tokens`` and ``--max-run-tokens`` for ever,
    and a string or an infinite number failed the call whose answer was fine.
    """
    if type(value) is int:  # the usual case first: one check
        return value if value >= 0 else 0
    if type(value) is float and math.isfinite(value) and value >= 0:
        return int(value)
    return 0


def _totals(calls: Iterable[CallRecord]) -> TokenTotals:
    # One pass, no generators: this runs at the end of every run, over every call record.
    totals = TokenTotals(
        calls=0, failed=0, cancelled=0, prompt_tokens=0, completion_tokens=0, total_tokens=0
    )
    estimated = 0
    for c in calls:
        estimated += "usage_estimated" in c
        totals["calls"] += 1
        totals["failed"] += c["status"] == "failed"
        totals["cancelled"] += c["status"] == "cancelled"
        totals["prompt_tokens"] += c["prompt_tokens"]
        totals["completion_tokens"] += c["completion_tokens"]
        totals["total_tokens"] += c["total_tokens"]
    if estimated:  # only then: a run whose every call reported usage reads as it did
        totals["estimated_calls"] = estimated
    return totals


def summarize(calls: Iterable[CallRecord]) -> UsageSummary:
    """Totals per layer and for the run; every figure is a sum over the call records."""
    calls = list(calls)
    layers: list[LayerTotals] = []
    for layer in sorted({c["layer"] for c in calls}):
        mine = [c for c in calls if c["layer"] == layer]
        layers.append(
            LayerTotals(
                layer=layer,
                latency_s=max(c["latency_s"] for c in mine),
                **_totals(mine),
            )
        )
    return UsageSummary(layers=layers, total=_totals(calls))
