"""Structured output that streams: partial objects while the aggregator writes, over real HTTP.

The fake backend streams the aggregator's JSON a word at a time, as a model constrained by
``response_format`` would; the proposers answer freely.
"""

import asyncio

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from langgraph_moa import MoAChatModel, MoAConfig
from langgraph_moa.testing import FaultProfile, FaultServer

REPLY = '{"city": "Paris", "population": 2102650, "country": "France"}'
WHOLE = {"city": "Paris", "population": 2102650, "country": "France"}


class City(TypedDict):
    city: str
    population: int
    country: str


class CityModel(BaseModel):
    city: str
    population: int
    country: str


JSON_SCHEMA = {
    "title": "City",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "country": {"type": "string"},
    },
    "required": ["city", "population", "country"],
}


@pytest.fixture(scope="module")
def config():
    # Spaces after ',' and ':' make the words the fake backend streams one by one.
    words = REPLY.replace(", ", ",").replace(",", ", ").replace(": ", ":").replace(":", ": ")
    with FaultServer({"agg": FaultProfile(reply_text=words, token_s=0.005)}) as server:
        url = server.url
        yield MoAConfig(proposers=[f"a@{url}", f"b@{url}"], aggregator=f"agg@{url}", layers=2)


def collect(runnable, mode):
    if mode == "sync":
        return list(runnable.stream("Capital of France?"))

    async def gather():
        return [x async for x in runnable.astream("Capital of France?")]

    return asyncio.run(gather())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("schema", "method"),
    [(City, "json_schema"), (JSON_SCHEMA, "json_schema"), (JSON_SCHEMA, "json_mode")],
)
def test_a_dict_schema_streams_partial_objects_then_the_whole(config, schema, method, mode):
    structured = MoAChatModel(config=config).with_structured_output(schema, method=method)
    seen = collect(structured, mode)
    assert seen[-1] == WHOLE
    # Each object grows the one before: fields arrive while the aggregator writes.
    partials = [s for s in seen if s != WHOLE]
    assert len(partials) >= 2, seen
    assert any("city" in s and "country" not in s for s in partials)
    assert structured.invoke("Capital of France?") == WHOLE


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_pydantic_schema_streams_the_validated_object_once(config, mode):
    structured = MoAChatModel(config=config).with_structured_output(CityModel)
    assert collect(structured, mode) == [CityModel(**WHOLE)]


TITLELESS = {key: value for key, value in JSON_SCHEMA.items() if key != "title"}


@pytest.mark.parametrize(
    ("schema", "fix"),
    [
        (TITLELESS, "give the JSON schema a top-level 'title'"),
        (
            {"type": "function", "function": {"name": "City", "parameters": TITLELESS}},
            "or use method='function_calling'",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_schema_chatopenai_cannot_answer_in_is_refused_before_any_request(schema, fix, mode):
    """ChatOpenAI (llama.cpp's server, Together) refuses a JSON schema without a title, and an
    OpenAI tool with json_schema: the run is refused before the first request, not after the
    proposals were paid for; the same aggregator answers in the titled schema."""
    from langgraph_moa import MoAInputError

    with FaultServer({"agg": FaultProfile(reply_text=REPLY)}) as server:
        url = server.url
        config = MoAConfig(proposers=[f"a@{url}", f"b@{url}"], aggregator=f"agg@{url}")
        structured = MoAChatModel(config=config).with_structured_output(schema)
        with pytest.raises(MoAInputError, match=r"^Aggregator agg@\S+ cannot answer") as e:
            collect(structured, mode)
        assert fix in str(e.value) and "\n" not in str(e.value)
        assert sum(server.requests.values()) == 0
        titled = MoAChatModel(config=config).with_structured_output(JSON_SCHEMA)
        assert titled.invoke("Capital of France?") == WHOLE
