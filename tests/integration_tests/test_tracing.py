"""LangSmith traces, offline: the real langsmith client posts to a loopback recorder.

The tree must mirror the MoA structure with named runs ("layer 1 / proposer 2 / <model>")
and metadata, and no API key may appear anywhere in what the SDK sends.
"""

import json

import pytest
from langsmith import Client
from langsmith.run_helpers import tracing_context

from langgraph_moa import MoAConfig, OpenAIEndpoint, create_moa_graph
from langgraph_moa._redact import REDACTED
from langgraph_moa.testing import FaultProfile, FaultServer

SECRET = "sk-this-must-never-reach-a-trace-0123456789"


def runs_from(sent):
    """Merge POST /runs (start) and PATCH /runs/{id} (end) into one record per run."""
    runs: dict[str, dict] = {}
    for item in sent:
        if not item["body"] or not item["path"].startswith("runs"):
            continue
        data = json.loads(item["body"])
        run_id = data.get("id") or item["path"].split("/")[-1]
        runs.setdefault(run_id, {}).update(data)
    return runs


def ancestors(runs, run):
    names = []
    while run.get("parent_run_id"):
        run = runs[run["parent_run_id"]]
        names.append(run["name"])
    return names


def test_trace_tree_mirrors_the_moa_and_hides_keys(recorder, monkeypatch):
    url, sent = recorder
    monkeypatch.setenv("BACKEND_KEY", SECRET)
    with FaultServer(default=FaultProfile()) as backend:

        def model(name):
            return OpenAIEndpoint(base_url=backend.url, model=name, api_key_env="BACKEND_KEY")

        config = MoAConfig(
            proposers=[model("alpha"), model("beta")],
            aggregator=model("omega"),
            layers=3,
            name="traced-moa",
        )
        client = Client(api_url=url, api_key="test", auto_batch_tracing=False)
        with tracing_context(enabled=True, client=client, project_name="moa-tests"):
            create_moa_graph(config).invoke({"messages": [("user", "Explain X")]})
        client.flush()

    assert SECRET not in json.dumps(sent)
    runs = runs_from(sent)
    by_name = {r["name"]: r for r in runs.values() if "name" in r}
    root = by_name["traced-moa"]
    assert root.get("parent_run_id") is None
    for layer in (1, 2):
        for i, name in ((1, "alpha"), (2, "beta")):
            run = by_name[f"layer {layer} / proposer {i} / {name}@{backend.url}"]
            assert run["run_type"] == "llm"
            meta = run["extra"]["metadata"]
            assert (
                meta["moa_layer"],
                meta["moa_proposer"],
                meta["moa_variant"],
                meta["moa_preset"],
            ) == (layer, i - 1, "moa", "traced-moa")
            assert "moa:proposer" in run["tags"]
            # The proposer's run sits under the 'propose' node, under the graph's root.
            assert ancestors(runs, run)[0] == "propose" and ancestors(runs, run)[-1] == "traced-moa"
    aggregator = by_name[f"layer 3 / aggregator / omega@{backend.url}"]
    assert (
        "moa:final" in aggregator["tags"]
        and aggregator["extra"]["metadata"]["moa_role"] == "aggregator"
    )
    assert (
        ancestors(runs, aggregator)[0] == "aggregate"
        and ancestors(runs, aggregator)[-1] == "traced-moa"
    )
    assert {"prepare", "join_layer"} <= set(by_name)


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_streamed_chat_model_run_holds_its_inner_calls(recorder, how):
    """LangChain's stream gives _stream no run manager; the proposer and aggregator runs
    must still sit under the chat model's run in the trace, not as roots of their own."""
    from langgraph_moa import MoAChatModel

    url, sent = recorder
    with FaultServer(default=FaultProfile()) as backend:
        config = MoAConfig(
            proposers=[OpenAIEndpoint(base_url=backend.url, model="alpha")],
            aggregator=OpenAIEndpoint(base_url=backend.url, model="omega"),
            layers=2,
        )
        client = Client(api_url=url, api_key="test", auto_batch_tracing=False)
        with tracing_context(enabled=True, client=client, project_name="moa-tests"):
            llm = MoAChatModel(config=config, model="m")
            if how == "stream":
                text = "".join(c.text for c in llm.stream("X"))
            else:
                text = "".join([c.text async for c in llm.astream("X")])
        client.flush()

    assert text
    runs = runs_from(sent)
    llm_runs = [r for r in runs.values() if r.get("run_type") == "llm"]
    (root,) = [r for r in llm_runs if not r.get("parent_run_id")]
    assert root["name"] == "MoAChatModel" and len(llm_runs) == 3
    for run in llm_runs:
        assert run is root or ancestors(runs, run)[-1] == "MoAChatModel"


def test_an_upstream_error_that_repeats_the_key_reaches_the_trace_without_it(recorder, monkeypatch):
    """A careless upstream repeats the request's Authorization header in its 400: the failed
    call's run in the trace carries the error, never the key."""
    url, sent = recorder
    monkeypatch.setenv("BACKEND_KEY", SECRET)
    profiles = {"echo": FaultProfile(error_rate=1.0, errors=["echo"])}
    with FaultServer(profiles, default=FaultProfile()) as backend:

        def model(name):
            return OpenAIEndpoint(base_url=backend.url, model=name, api_key_env="BACKEND_KEY")

        config = MoAConfig(
            proposers=[model("alpha"), model("echo")], aggregator=model("omega"), layers=2
        )
        client = Client(api_url=url, api_key="test", auto_batch_tracing=False)
        with tracing_context(enabled=True, client=client, project_name="moa-tests"):
            out = create_moa_graph(config).invoke({"messages": [("user", "Explain X")]})
        client.flush()

    failed = next(c for c in out["calls"] if c["status"] == "failed")
    assert SECRET not in failed["error"]  # the call record was already clean
    runs = runs_from(sent)
    errors = [r["error"] for r in runs.values() if r.get("error")]
    assert any(REDACTED in e for e in errors), errors  # the echo reached the trace, cleaned
    assert SECRET not in json.dumps(sent)
