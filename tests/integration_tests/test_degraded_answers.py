"""Answers that come back with HTTP 200 but degraded: cut by max_tokens, refused, empty.

Real HTTP on loopback (`FaultServer`, model@url specs), so the bodies are the ones an
OpenAI-compatible provider sends: ``finish_reason: "length"``, OpenAI's ``refusal`` field
with null content, an empty ``content``.
"""

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.testing import FaultProfile, FaultServer

FINISHED = "The answer is 42."
CUT = "Step one: 6 times"
REFUSED = "I can't help with that."


@pytest.fixture(scope="module")
def server():
    profiles = {
        "finished": FaultProfile(reply_text=FINISHED),
        "cut": FaultProfile(reply_text=CUT, finish_reason="length"),
        "refuses": FaultProfile(refusal=REFUSED),
        "agg": FaultProfile(reply_text="Final: 42."),
        "agg-empty": FaultProfile(reply_text=""),
        "spent": FaultProfile(reply_text="", finish_reason="length"),
        # Anthropic's and Gemini's spellings of a max_tokens cut, as a gateway passes them on
        "cut-anthropic": FaultProfile(reply_text=CUT, finish_reason="max_tokens"),
        "cut-gemini": FaultProfile(reply_text=CUT, finish_reason="MAX_TOKENS"),
    }
    with FaultServer(profiles) as s:
        yield s


def config(server, proposers: list[str], aggregator: str = "agg") -> MoAConfig:
    return MoAConfig(
        proposers=[f"{p}@{server.url}" for p in proposers],
        aggregator=f"{aggregator}@{server.url}",
        layers=2,
    )


def test_a_proposal_cut_by_max_tokens_reaches_the_aggregator_marked_as_cut(server):
    """A proposal that its max_tokens ended ("Step one: 6 times") was shown to the aggregator
    as a whole response, its last words read as its conclusion. It is still a reference (what
    it says is worth reading), but its slot now says that it ends unfinished; a finished
    proposal's does not."""
    out = create_moa_graph(config(server, ["finished", "cut"])).invoke(
        {"messages": [("user", "What is 6 times 7?")]}
    )
    assert [c["finish_reason"] for c in out["calls"] if c["role"] == "proposer"][-2:] == [
        "stop",
        "length",
    ]
    system = server.last_body["agg"]["messages"][0]["content"]
    cut_slot = system[system.index(CUT) :].split("</response", 1)[0]
    finished_slot = system[system.index(FINISHED) :].split("</response", 1)[0]
    assert "cut off" in cut_slot and "unfinished" in cut_slot
    assert "cut off" not in finished_slot


def test_a_fault_servers_answer_that_its_max_tokens_cut_says_length():
    """`FaultProfile(honor_max_tokens=True)` cut the answer at max_tokens and said "stop",
    which no real server says of a cut answer: the cut reference went unmarked."""
    capped = FaultProfile(reply_words=12, honor_max_tokens=True)
    with FaultServer(default=capped) as server:
        config = MoAConfig(
            proposers=[
                {"model": f"short@{server.url}", "max_tokens": 4},
                {"model": f"whole@{server.url}", "max_tokens": 12},
            ],
            aggregator=f"agg@{server.url}",
            layers=2,
        )
        out = create_moa_graph(config).invoke({"messages": [("user", "Count.")]})
        system = server.last_body["agg"]["messages"][0]["content"]
    finished = {c["configured_model"].split("@")[0]: c["finish_reason"] for c in out["calls"]}
    assert (finished["short"], finished["whole"], finished["agg"]) == ("length", "stop", "stop")
    short = system[system.index("short answer") :].split("</response", 1)[0]
    whole = system[system.index("whole answer") :].split("</response", 1)[0]
    assert "cut off" in short and "cut off" not in whole


def test_the_fallback_answer_is_a_finished_proposal_rather_than_a_cut_one(server):
    """Every aggregator failed (an empty answer), so the best proposal answers. The first
    successful one was taken, even when max_tokens had cut it and a finished one was there:
    the user got "Step one: 6 times" as the answer. A finished proposal is preferred now."""
    out = create_moa_graph(config(server, ["cut", "finished"], "agg-empty")).invoke(
        {"messages": [("user", "What is 6 times 7?")]}
    )
    answer = out["messages"][-1]
    assert answer.response_metadata["moa"]["fallback"] == "best_proposal"
    assert answer.text == FINISHED
    assert answer.response_metadata["finish_reason"] == "stop"


def test_a_fallback_that_only_has_cut_proposals_says_length(server):
    """With no finished proposal the cut one still answers, and says it was cut."""
    out = create_moa_graph(config(server, ["cut"], "agg-empty")).invoke(
        {"messages": [("user", "What is 6 times 7?")]}
    )
    answer = out["messages"][-1]
    assert answer.text == CUT and answer.response_metadata["finish_reason"] == "length"


def test_a_refusal_is_a_failed_call_that_names_the_refusal(server):
    """OpenAI's refusal shape (content null, the reason in ``refusal``) was recorded as
    "returned an empty answer": the record hid that the model refused, and what it said. The
    call still fails (a refusal is no reference), and its error now quotes the refusal."""
    out = create_moa_graph(config(server, ["finished", "refuses"])).invoke(
        {"messages": [("user", "What is 6 times 7?")]}
    )
    refused = next(c for c in out["calls"] if c["configured_model"].startswith("refuses@"))
    assert refused["status"] == "failed"
    assert "refused" in refused["error"] and REFUSED in refused["error"]
    assert REFUSED not in server.last_body["agg"]["messages"][0]["content"]


async def test_a_cut_proposal_is_marked_in_the_parts_of_a_chunkwise_answer():
    """Chunk-wise aggregation marks a proposal still being written; one that max_tokens
    ended read as finished and whole. Its slot now says it was cut off."""
    streamed = FaultProfile(reply_text=FINISHED, token_s=0.01)
    profiles = {"cut": FaultProfile(reply_text=CUT, token_s=0.01, finish_reason="length")}
    with FaultServer(profiles, default=streamed) as server:
        cfg = MoAConfig(
            proposers=[f"finished@{server.url}", f"cut@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": 2},
        )
        out = await create_moa_graph(cfg).ainvoke({"messages": [("user", "q")]})
        system = server.last_body["agg"]["messages"][0]["content"]
    assert out["calls"][-2]["finish_reason"] == "length"
    cut_slot = system[system.index(CUT) :].split("</response", 1)[0]
    assert "cut off" in cut_slot and "unfinished" in cut_slot
    assert "cut off" not in system[system.index(FINISHED) :].split("</response", 1)[0]


def test_an_empty_answer_that_max_tokens_ended_says_to_raise_max_tokens(server):
    """A reasoning model whose hidden thinking used up max_tokens sends empty content with
    finish_reason "length". The call failed as "returned an empty answer", with nothing to
    tell the user that the fix is a larger max_tokens; its error says so now."""
    out = create_moa_graph(config(server, ["finished", "spent"])).invoke(
        {"messages": [("user", "What is 6 times 7?")]}
    )
    spent = next(c for c in out["calls"] if c["configured_model"].startswith("spent@"))
    assert spent["status"] == "failed" and "empty answer" in spent["error"]
    assert "max_tokens" in spent["error"]


@pytest.mark.parametrize("spelling", ["anthropic", "gemini"])
def test_a_cut_call_says_length_in_its_event_and_answer_whatever_the_spelling(server, spelling):
    """The page marks a card and an answer as cut off where their ``finish_reason`` is
    "length", but the `finished` event and the answer carried the provider's spelling: a
    proposal or answer that Anthropic's "max_tokens" or Gemini's "MAX_TOKENS" ended read as
    plainly done, and an OpenAI client of `moa serve` got a finish reason OpenAI never sends.
    Both say "length" now, as `moa run`'s row and warning already read all spellings."""
    from langgraph_moa.serving._events import finish_reason

    graph = create_moa_graph(config(server, ["finished", f"cut-{spelling}"], f"cut-{spelling}"))
    events, values = [], {}
    for mode, chunk in graph.stream(
        {"messages": [("user", "What is 6 times 7?")]}, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            values = chunk
    finished = {
        (e["role"], e["configured_model"].split("@")[0]): e["finish_reason"]
        for e in events
        if e["event"] == "finished"
    }
    assert finished[("proposer", f"cut-{spelling}")] == "length"
    assert finished[("proposer", "finished")] == "stop"
    assert finished[("aggregator", f"cut-{spelling}")] == "length"
    assert finish_reason(values["messages"][-1]) == "length"
