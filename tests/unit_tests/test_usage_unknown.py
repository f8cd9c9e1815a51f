"""A provider that reports no usage: its calls are estimated and said to be, never free.

An old Ollama that ignores ``stream_options``, some proxies, a user's model without
``usage_metadata``: recorded as 0 tokens, such calls never reached `budget.max_tokens`,
priced at $0, and read as a real zero in every report.
"""

import json

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.config._prices import run_cost
from langgraph_moa.serving._app import create_app
from tests.helpers import QUESTION


def test_a_call_without_usage_is_estimated_and_marked(fake):
    config = MoAConfig(
        proposers=[fake("A", no_usage=True), fake("B")],
        aggregator=fake("AGG", no_usage=True),
        layers=2,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    by_model = {c["configured_model"]: c for c in out["calls"]}
    for name in ("A", "AGG"):
        record = by_model[name]
        assert record["usage_estimated"] is True
        assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
        assert record["total_tokens"] == record["prompt_tokens"] + record["completion_tokens"]
    assert "usage_estimated" not in by_model["B"]  # a reported usage stays as reported
    assert out["usage"]["total"]["estimated_calls"] == 2
    assert [la["estimated_calls"] for la in out["usage"]["layers"]] == [1, 1]
    meta = out["messages"][-1].response_metadata["moa"]
    assert meta["usage"]["total"]["estimated_calls"] == 2


def test_a_run_where_every_call_reported_usage_has_no_estimate_field(fake):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    out = create_moa_graph(config).invoke(QUESTION)
    assert "estimated_calls" not in out["usage"]["total"]
    assert all("usage_estimated" not in c for c in out["calls"])


def test_the_token_budget_counts_calls_that_reported_no_usage(fake, log):
    config = MoAConfig(
        proposers=[fake("A", no_usage=True), fake("B", no_usage=True)],
        aggregator=fake("AGG", no_usage=True),
        layers=3,
        budget={"max_tokens": 1},
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # no layer 2, no aggregator
    meta = out["messages"][-1].response_metadata["moa"]
    assert meta["fallback"] == "budget"
    assert "estimated" in meta["fallback_reason"]


def test_the_cost_counts_estimated_calls_apart():
    calls = [
        {"model": "m", "prompt_tokens": 10, "completion_tokens": 10, "usage_estimated": True},
        {"model": "m", "prompt_tokens": 10, "completion_tokens": 10},
    ]
    cost = run_cost(calls, {"m": (1.0, 1.0)})
    assert cost["estimated_calls"] == 1 and cost["dollars"] > 0.00002  # both priced


def test_serve_says_its_usage_is_partly_estimated(fake):
    from fastapi.testclient import TestClient

    system = MoAConfig(
        proposers=[fake("A", no_usage=True)], aggregator=fake("AGG"), layers=2, name="m"
    )
    client = TestClient(create_app({"m": system}), base_url="http://localhost")
    body = {"model": "m", "messages": [{"role": "user", "content": "Explain X"}]}
    response = client.post(
        "/v1/chat/completions",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["estimated_calls"] == 1 and usage["prompt_tokens"] > 0


def test_moa_run_says_how_many_calls_are_estimated(fake):
    from langgraph_moa.cli._run import summary_line

    config = MoAConfig(proposers=[fake("A", no_usage=True), fake("B")], aggregator=fake("AGG"))
    out = create_moa_graph(config).invoke(QUESTION)
    assert "(2 calls estimated: no usage reported)" in summary_line(out)


def test_eval_counts_and_reports_estimated_calls(tmp_path):
    import asyncio

    from langgraph_moa.eval import EvalItem, Evaluation
    from tests.fakes import FakeChat

    system = MoAConfig(
        name="quiet",
        proposers=[FakeChat(label="A", no_usage=True), FakeChat(label="B")],
        aggregator=FakeChat(label="AGG"),
        layers=2,
    )
    items = [EvalItem(id=str(i), turns=["Say hi."], expected=["hi"]) for i in range(2)]
    prices = {"A": (1.0, 1.0), "B": (1.0, 1.0), "AGG": (1.0, 1.0)}
    summary = asyncio.run(Evaluation([system], items, tmp_path, prices=prices).run(progress=False))
    assert summary["quiet"]["estimated_calls"] == 2 and summary["quiet"]["unpriced_calls"] == 0
    report = (tmp_path / "report.md").read_text()
    assert "(2 calls estimated)" in report


async def test_a_chunk_wise_aggregator_that_reports_no_usage_counts_its_parts_prompts(fake):
    """The parts of a chunk-wise answer were recorded with 0 prompt tokens where the
    aggregator reported no usage: the prompts it read (every proposal) were free."""
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", no_usage=True),
        layers=2,
        aggregation={"start": "chunks", "chunk_tokens": 2},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    record = out["calls"][-1]
    assert record["role"] == "aggregator" and record["usage_estimated"] is True
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0


def test_chunk_wise_parts_that_report_and_parts_that_do_not_are_summed_and_marked():
    from langchain_core.messages import AIMessage, HumanMessage

    from langgraph_moa.graph._chunkwise import _summed, _Written

    written = _Written()
    usage = {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    written.paid(AIMessage(content="ab", usage_metadata=usage), [HumanMessage("q")])
    assert not written.estimated  # a part that reported usage keeps it
    written.paid(AIMessage(content="x" * 6), [HumanMessage("y" * 30)])
    whole = _summed("abxxxxxx", written.responses).usage_metadata
    assert written.estimated and whole is not None
    assert whole["input_tokens"] == 7 + 10 and whole["output_tokens"] == 2 + 2


def test_a_refused_answer_that_reported_no_usage_counts_its_prompt(fake):
    """An answer the package refused (a content filter stopped it) was billed, prompt and
    all; where its provider reported no usage, its record counted 0 prompt tokens: the
    estimate read only what it wrote."""
    config = MoAConfig(
        proposers=[fake("A"), fake("FILTERED", no_usage=True, finish=lambda n: "content_filter")],
        aggregator=fake("AGG"),
        layers=2,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    [record] = [c for c in out["calls"] if c["configured_model"] == "FILTERED"]
    assert record["status"] == "failed" and record["error"].startswith("ContentFilteredError")
    assert record["usage_estimated"] is True
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
    assert record["total_tokens"] == record["prompt_tokens"] + record["completion_tokens"]


def test_the_estimate_counts_the_tool_schemas_a_call_was_sent(fake):
    """The schemas of bound tools are prompt tokens the provider bills; the estimate read the
    messages alone, so a run with many tools was counted as if it had none."""
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    from langgraph_moa import MoAChatModel
    from langgraph_moa.text._prompts import estimate_tokens

    @tool
    def lookup(city: str, country: str, units: str = "metric") -> str:
        """Look up the current weather of a city, with its temperature, wind and rain."""
        return city

    def prompt_of(with_tools: bool) -> int:
        config = MoAConfig(proposers=[fake("A", no_usage=True)], aggregator=fake("AGG"))
        llm = MoAChatModel(config=config)
        llm = llm.bind_tools([lookup]) if with_tools else llm
        answer = llm.invoke([HumanMessage("Weather in Paris?")])
        calls = answer.response_metadata["moa"]["calls"]
        [record] = [c for c in calls if c["role"] == "proposer" and c["layer"] == 1]
        assert record["usage_estimated"] is True
        return record["prompt_tokens"]

    schema = str(lookup.args_schema.model_json_schema())
    assert prompt_of(True) - prompt_of(False) >= estimate_tokens(schema) // 2


def test_the_estimate_counts_an_image_part_of_the_prompt():
    """An image part has no text, so a prompt of one image was estimated at 0 tokens."""
    from langchain_core.messages import AIMessage, HumanMessage

    from langgraph_moa.run._accounting import estimated_tokens
    from langgraph_moa.text._prompts import MEDIA_PART_TOKENS, estimate_tokens

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    prompt = [HumanMessage([{"type": "text", "text": "What is this?"}, image])]
    prompt_tokens, *_ = estimated_tokens(AIMessage("A cat."), prompt)
    assert prompt_tokens == estimate_tokens("What is this?") + MEDIA_PART_TOKENS


def test_plain_text_blocks_and_refusal_parts_are_counted_in_the_estimate():
    """``BaseMessage.text`` reads only ``text`` parts: a plain-text block (which `moa serve`
    takes) and a refusal part were estimated at 0 tokens."""
    from langchain_core.messages import AIMessage, HumanMessage

    from langgraph_moa.run._accounting import estimated_tokens
    from langgraph_moa.text._prompts import estimate_tokens

    document = "The meeting moved to Thursday at ten. " * 8
    plain = {"type": "text-plain", "text": document, "mime_type": "text/plain"}
    refused = {"type": "refusal", "refusal": "I can't help with that request."}
    prompt = [HumanMessage([plain]), AIMessage([refused]), HumanMessage("Why not?")]
    answer = AIMessage([{"type": "refusal", "refusal": "It is not allowed."}])
    prompt_tokens, completion, *_ = estimated_tokens(answer, prompt)
    assert prompt_tokens == sum(
        map(estimate_tokens, [document, "I can't help with that request.", "Why not?"])
    )
    assert completion == estimate_tokens("It is not allowed.")


def test_a_function_calling_structured_answer_without_usage_is_counted_once(log):
    """Its text is its tool call's arguments written out (`_answer_of`): counted once."""
    from langchain_core.runnables import RunnableLambda

    from langgraph_moa import MoAChatModel
    from langgraph_moa.text._prompts import estimate_tokens
    from tests.fakes import FakeChat

    answer = {"city": "Paris", "confidence": 0.9}

    class Calling(FakeChat):
        """Answers with the structure in a tool call and no text, as function calling does."""

        def with_structured_output(self, schema, *, include_raw=False, **kwargs):
            def parse(messages):
                call = {"name": "City", "args": answer, "id": "c1"}
                raw = self.invoke(messages).model_copy(update={"content": "", "tool_calls": [call]})
                return {"raw": raw, "parsed": answer, "parsing_error": None}

            return RunnableLambda(parse)

    config = MoAConfig(
        proposers=[FakeChat(label="A", log=log)],
        aggregator=Calling(label="AGG", log=log, no_usage=True),
    )
    schema = {"title": "City", "type": "object", "properties": {"city": {"type": "string"}}}
    out = MoAChatModel(config=config).with_structured_output(schema, include_raw=True).invoke("q")
    assert out["parsed"] == answer
    [record] = [c for c in out["raw"].response_metadata["moa"]["calls"] if c["role"] != "proposer"]
    assert record["usage_estimated"] is True
    assert record["completion_tokens"] == estimate_tokens(json.dumps(answer))
    # the mark that says so is the package's own: a caller never sees it
    assert [k for k in out["raw"].response_metadata if k.startswith("moa_")] == []


def _aggregator_prompt(fake, structure=None, method="json_schema", **call_kwargs) -> int:
    """The estimated prompt tokens of an aggregator that reports no usage."""
    from langgraph_moa import MoAChatModel

    reply = (
        (lambda *_: '{"city": "Paris", "country": "France"}')
        if structure is not None or call_kwargs
        else None
    )
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", no_usage=True, reply=reply))
    llm = MoAChatModel(config=config)
    if structure is not None:
        structured = llm.with_structured_output(structure, include_raw=True, method=method)
        raw = structured.invoke("q")["raw"]
    else:
        raw = llm.invoke("q", **call_kwargs)
    [record] = [c for c in raw.response_metadata["moa"]["calls"] if c["role"] == "aggregator"]
    assert record["usage_estimated"] is True
    return record["prompt_tokens"]


_CITY = {
    "title": "City",
    "description": "The city the question is about, with its country and the local time.",
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name, as its people write it."},
        "country": {"type": "string", "description": "The country it lies in."},
    },
    "required": ["city", "country"],
}


def test_the_estimate_counts_the_structured_output_schema_a_call_was_sent(fake):
    """A structured answer's schema is sent with the call and billed as prompt tokens, as a
    tool's is; the estimate counted the tools' schemas alone."""
    from pydantic import BaseModel, Field

    from langgraph_moa.text._prompts import estimate_tokens

    class City(BaseModel):
        """The city the question is about, with its country and the local time."""

        city: str = Field(description="The city's name, as its people write it.")
        country: str = Field(description="The country it lies in.")

    plain = _aggregator_prompt(fake)
    least = estimate_tokens(json.dumps(_CITY)) // 2
    assert _aggregator_prompt(fake, _CITY) - plain >= least  # a JSON schema
    assert _aggregator_prompt(fake, City) - plain >= least  # a pydantic model: its schema
    # `moa serve`'s client's response_format, sent with the final call
    wanted = {"type": "json_schema", "json_schema": {"name": "City", "schema": _CITY}}
    assert _aggregator_prompt(fake, response_format=wanted) - plain >= least
    assert _aggregator_prompt(fake, response_format={"type": "json_object"}) == plain


def test_plain_text_blocks_by_data_or_address_and_a_kept_refusal_are_counted():
    """A plain-text block may carry its text as base64 data or a URL instead of ``text``, and
    OpenAI's client keeps a refusal in ``additional_kwargs["refusal"]``: each was 0 tokens."""
    import base64

    from langchain_core.messages import AIMessage, HumanMessage

    from langgraph_moa.run._accounting import estimated_tokens
    from langgraph_moa.text._prompts import MEDIA_PART_TOKENS, estimate_tokens

    document = "The meeting moved to Thursday at ten. " * 8
    data = base64.b64encode(document.encode()).decode()
    by_data = {"type": "text-plain", "base64": data, "mime_type": "text/plain"}
    by_url = {"type": "text-plain", "url": "https://example.com/notes.txt"}
    refused = AIMessage("", additional_kwargs={"refusal": "I can't help with that request."})
    prompt = [HumanMessage([by_data]), HumanMessage([by_url]), refused, HumanMessage("Why?")]
    answer = AIMessage("", additional_kwargs={"refusal": "It is not allowed."})
    prompt_tokens, completion, *_ = estimated_tokens(answer, prompt)
    words = [document, "I can't help with that request.", "Why?"]
    assert prompt_tokens == sum(map(estimate_tokens, words)) + MEDIA_PART_TOKENS
    assert completion == estimate_tokens("It is not allowed.")


def test_a_json_mode_structured_answer_is_sent_no_schema_and_counts_none(fake):
    """``json_mode`` sends ``{"type": "json_object"}`` alone, never the schema (it parses the
    answer by it): the estimate counted the schema as if it had been sent."""
    assert _aggregator_prompt(fake, _CITY, method="json_mode") == _aggregator_prompt(fake)


def test_trimmed_references_leave_room_for_the_structured_output_schema(fake):
    """The final call is sent its structure's schema besides the messages, and the trim left
    it no room: the references filled the aggregator's window and the schema overflowed it."""
    from langgraph_moa import MoAChatModel
    from langgraph_moa.config._schema import AggregatorConfig

    schema = {**_CITY, "description": "The city the question is about. " * 150}
    words = "Some words. " * 1000
    aggregator = fake(
        "AGG", no_usage=True, reply=lambda *_: '{"city": "Paris", "country": "France"}'
    )
    config = MoAConfig(
        proposers=[fake("A", reply=lambda *_: words), fake("B", reply=lambda *_: words)],
        aggregator=AggregatorConfig(model=aggregator, context_window=3000, max_tokens=100),
    )
    llm = MoAChatModel(config=config).with_structured_output(schema, include_raw=True)
    raw = llm.invoke("q")["raw"]
    [record] = [c for c in raw.response_metadata["moa"]["calls"] if c["role"] == "aggregator"]
    assert record["usage_estimated"] is True
    assert record["prompt_tokens"] <= 3000 - 100
