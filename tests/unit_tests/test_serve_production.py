"""`moa serve` under an orchestrator: a readiness probe by status code, JSON access log lines."""

import json

import pytest
from fastapi.testclient import TestClient

from langgraph_moa import MoAConfig
from langgraph_moa.serving._access import AccessLog
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._guard import ServeSecurity

USER = [{"role": "user", "content": "Explain X"}]
JSON = {"content-type": "application/json"}


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


def _run_load(app):
    return app.state.run_load


def test_ready_turns_503_at_the_run_cap_while_health_stays_200(system):
    """A Kubernetes probe reads the status code, not the body: /health is 200 whether or not
    a run would be refused, so a readiness probe on it kept a full server in the Service and
    its clients got the 503 of --max-runs. /ready is 200 while a run would be admitted and
    503 while it would be refused; /health stays the cheap liveness (always 200). Both are
    answered to any Host (a probe names the pod's IP) and without the key."""
    app = create_app({"m": system}, api_key="k", security=ServeSecurity(max_runs=1))
    client = TestClient(AccessLog(app, ["m"], lambda line: None), base_url="http://10.1.2.3")
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert client.head("/ready").status_code == 200
    _run_load(app).running = 1  # full: the next run would get a 503
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False, "busy": True})
    assert client.head("/ready").status_code == 503
    assert client.get("/health").status_code == 200  # alive: no restart for being busy
    _run_load(app).running = 0
    assert client.get("/ready").status_code == 200


def test_ready_is_listed_among_the_routes_and_not_logged(system):
    """A probe every few seconds would fill the access log, as /health's does not."""
    lines: list[str] = []
    client = TestClient(AccessLog(create_app({"m": system}), ["m"], lines.append))
    client.get("/ready")
    client.get("/health")
    assert lines == []
    message = client.get("/nope", headers={"Host": "localhost"}).json()["error"]["message"]
    assert "GET /health" in message and "GET /ready" in message, message


def _json_logged(app):
    lines: list[str] = []
    client = TestClient(
        AccessLog(app, ["m"], lines.append, json_lines=True), base_url="http://localhost"
    )
    return client, lines


def test_json_lines_log_one_object_per_request_with_its_facts(system):
    """A log pipeline had to parse the "·"-joined text line. With --log-format json each
    request is one JSON object: time, request ID, method, path, status, duration, model,
    calls, failed calls, tokens, degraded."""
    client, lines = _json_logged(create_app({"m": system}))
    body = json.dumps({"model": "m", "messages": USER})
    answer = client.post(
        "/v1/chat/completions", content=body, headers={**JSON, "X-Request-ID": "req-1"}
    )
    assert answer.status_code == 200
    [line] = lines
    record = json.loads(line)
    assert record["request_id"] == "req-1"
    assert (record["method"], record["path"], record["status"]) == (
        "POST",
        "/v1/chat/completions",
        200,
    )
    assert record["model"] == "m" and record["calls"] == 3 and record["failed"] == 0
    assert record["tokens"] == answer.json()["usage"]["total_tokens"]
    assert record["degraded"] is False
    assert isinstance(record["duration_s"], float) and record["duration_s"] >= 0
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert record["client"] == "testclient"


def test_json_lines_say_a_degraded_answer_and_a_refusal(fake):
    down = fake("AGG", fail=lambda n, m: ValueError("down"))
    config = MoAConfig(  # the aggregator down: the best proposal answers (the default)
        proposers=[fake("A")], aggregator=down, layers=2, name="m", retry={"max_attempts": 1}
    )
    client, lines = _json_logged(create_app({"m": config}))
    body = json.dumps({"model": "m", "messages": USER})
    assert client.post("/v1/chat/completions", content=body, headers=JSON).status_code == 200
    client.get("/v1/models/nope%0Aforged")
    degraded, refused = (json.loads(line) for line in lines)
    assert degraded["degraded"] is True and degraded["fallback"] == "best_proposal"
    assert degraded["failed"] == 1 and degraded["failed_models"] == ["AGG"]
    assert refused["status"] == 404 and refused["degraded"] is False
    assert "error" in refused and len(lines) == 2  # a client's newline forges no line


def test_text_stays_the_default_log_line(system):
    lines: list[str] = []
    client = TestClient(AccessLog(create_app({"m": system}), ["m"], lines.append))
    client.get("/v1/models", headers={"Host": "localhost"})
    assert lines[0].startswith("GET /v1/models 200 · ")


def test_serve_log_format_json_reaches_the_access_log_and_text_is_the_default(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["log_format"] == "text"
    assert CliRunner().invoke(cli.app, ["serve", "--log-format", "json"]).exit_code == 0
    assert seen["log_format"] == "json"
    bad = CliRunner().invoke(cli.app, ["serve", "--log-format", "xml"])
    assert bad.exit_code == 2 and "--log-format" in bad.output


def _serve_unreachable(monkeypatch, tmp_path, run, **options) -> list[str]:
    """Run `serve` on endpoints nobody listens on, uvicorn's `run` replaced by `run`; return
    the lines it logged."""
    import uvicorn

    from langgraph_moa.serving import _server

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    lines: list[str] = []
    _server.serve({"fake": config}, history_path=tmp_path / "h.db", log=lines.append, **options)
    return lines


def test_serve_stacks_a_json_access_log(monkeypatch, tmp_path):
    seen = {}
    lines = _serve_unreachable(
        monkeypatch, tmp_path, lambda server, sockets=None: seen.update(s=server), log_format="json"
    )
    client = TestClient(seen["s"].config.app, base_url="http://127.0.0.1")
    assert client.get("/v1/models").status_code == 200
    assert json.loads(lines[-1])["path"] == "/v1/models"


def _metered(app):
    from langgraph_moa.serving._metrics import Metrics

    metrics = Metrics.for_app(app)
    return TestClient(
        AccessLog(app, ["m"], lambda line: None, metrics=metrics), base_url="http://localhost"
    )


def _samples(text):
    """Return {'name{labels}': value} of an exposition's samples."""
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def test_metrics_count_requests_calls_tokens_and_degraded_answers(fake):
    """Nothing exposed counts: a team serving MoA as a model could not graph its request
    rate, errors, latency, per-model call outcomes and tokens, or its degraded answers."""
    down = fake("AGG", fail=lambda n, m: ConnectionError("down"))  # retried, then failed
    systems = {
        "m": MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG2"), layers=2),
        "fb": MoAConfig(
            proposers=[fake("C")],
            aggregator=down,
            layers=2,
            retry={"max_attempts": 2, "initial_interval": 0, "jitter": False},
        ),
    }
    app = create_app(systems, api_key="k")
    client = _metered(app)
    key = {"Authorization": "Bearer k", **JSON}
    for model in ("m", "m", "fb"):
        body = json.dumps({"model": model, "messages": USER})
        assert client.post("/v1/chat/completions", content=body, headers=key).status_code == 200
    client.get("/v1/models/no-such-model-xyz", headers=key)
    exposition = client.get("/metrics", headers=key)
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain")
    seen = _samples(exposition.text)
    assert seen['moa_requests_total{route="/v1/chat/completions",status="200"}'] == 3
    assert seen['moa_requests_total{route="/v1/models/{model}",status="404"}'] == 1
    assert "no-such-model-xyz" not in exposition.text  # a client's path is never a label
    assert seen['moa_request_duration_seconds_count{route="/v1/chat/completions"}'] == 3
    assert seen['moa_model_calls_total{model="A",outcome="ok"}'] == 2
    assert seen['moa_model_calls_total{model="AGG2",outcome="ok"}'] == 2
    assert seen['moa_model_calls_total{model="AGG",outcome="failed"}'] == 1
    assert seen['moa_model_retries_total{model="AGG"}'] == 1  # its second attempt
    assert seen['moa_model_tokens_total{model="A"}'] > 0
    assert seen["moa_degraded_answers_total"] == 1
    assert seen['moa_degraded_reasons_total{reason="fallback"}'] == 1
    assert seen["moa_runs_in_flight"] == 0 and seen["moa_max_runs"] == 256
    assert seen["moa_requests_in_flight"] == 0  # the scrape is answered around the count


def test_metrics_need_the_key_and_are_off_unless_asked_for(system):
    app = create_app({"m": system}, api_key="k")
    client = _metered(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    refused = client.get("/metrics", headers={"Host": "evil.example", "Authorization": "Bearer k"})
    assert refused.status_code == 421
    assert client.post("/metrics", headers={"Authorization": "Bearer k"}).status_code == 404
    plain = TestClient(AccessLog(app, ["m"], lambda line: None), base_url="http://localhost")
    assert plain.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 404


def test_a_model_the_operator_did_not_configure_is_counted_as_other(system):
    from langgraph_moa.serving._metrics import Metrics

    metrics = Metrics.for_app(create_app({"m": system}))
    calls = [{"configured_model": "evil@http://x/v1?k=s", "status": "ok", "attempts": 1}]
    metrics.observe("/v1/chat/completions", {"status": 200, "duration_s": 0.1}, calls)
    text = metrics.exposition().decode()
    assert 'moa_model_calls_total{model="other",outcome="ok"} 1.0' in text
    assert "evil" not in text


def test_metrics_count_every_route_of_the_app_by_its_template(system):
    """The route templates were listed by hand: a route added to the app since was counted
    as ``other``. They are read from the app's routes now."""
    app = create_app({"m": system})

    @app.get("/v1/moa/extra/{item}")
    async def extra(item: str) -> dict[str, str]:
        return {"item": item}

    client = _metered(app)
    assert client.get("/v1/moa/extra/client-chosen-xyz").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    seen = _samples(client.get("/metrics").text)
    assert seen['moa_requests_total{route="/v1/moa/extra/{item}",status="200"}'] == 1
    assert seen['moa_requests_total{route="other",status="404"}'] == 1


def test_serve_metrics_flag_stacks_metrics_and_refuses_without_prometheus_client(
    monkeypatch, tmp_path
):
    import sys

    import uvicorn
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.errors import MissingExtraError
    from langgraph_moa.serving import _server

    seen = {}
    monkeypatch.setattr(_server, "serve", lambda presets, **kwargs: seen.update(kwargs))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["metrics"] is False  # off unless asked for
    assert CliRunner().invoke(cli.app, ["serve", "--metrics"]).exit_code == 0
    assert seen["metrics"] is True
    monkeypatch.undo()

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: served.update(s=server))
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    _server.serve({"fake": config}, history_path=tmp_path / "h.db", log=print, metrics=True)
    client = TestClient(served["s"].config.app, base_url="http://127.0.0.1")
    assert "moa_requests_total" in client.get("/metrics").text
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    with pytest.raises(MissingExtraError, match="serve"):
        _server.serve({"fake": config}, history_path=tmp_path / "h.db", log=print, metrics=True)


def test_serve_preload_loads_the_local_models_before_it_listens(monkeypatch):
    """A local model's llama.cpp server started with the first request that needs it (up to
    120 s), while the server already answered /ready 200: Kubernetes sent that pod traffic
    whose first requests waited for the load. With --preload the served configs' local
    models are loaded after the checks and before "Serving" (and the port is opened only
    then); without it, nothing is loaded at start, as before."""
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _serve as serve_command
    from langgraph_moa.serving import _server

    said: list[object] = []

    def serve(presets, announce, **kwargs):
        announce("Serving")  # after the checks; uvicorn would start next
        said.append("listening")

    monkeypatch.setattr(_server, "serve", serve)
    monkeypatch.setattr(serve_command, "prepare", lambda names: said.append(list(names)))
    result = CliRunner().invoke(cli.app, ["serve", "--preset", "local-moa", "--preload"])
    assert result.exit_code == 0, result.output
    assert said == [["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"], "listening"]
    assert "Serving" in result.output
    said.clear()
    assert CliRunner().invoke(cli.app, ["serve", "--preset", "local-moa"]).exit_code == 0
    assert said == ["listening"]


def test_serve_preload_that_fails_exits_1_before_serving(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _serve as serve_command
    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.serving import _server

    monkeypatch.setattr(_server, "serve", lambda presets, announce, **kwargs: announce("Serving"))

    def prepare(names):
        raise LocalRuntimeError("not enough memory to load local:qwen2.5-coder-1.5b")

    monkeypatch.setattr(serve_command, "prepare", prepare)
    result = CliRunner().invoke(cli.app, ["serve", "--preset", "local-moa", "--preload"])
    # Raised out of the command: `moa`'s main says it in one line and exits 1.
    assert isinstance(result.exception, LocalRuntimeError) and result.exit_code == 1
    assert "Serving" not in result.output


def test_metrics_count_the_calls_of_a_run_that_failed(fake):
    """A run that failed (here its only aggregator, with on_aggregator_failure: raise) sent
    an error, not a completion with its ``moa.calls``: its calls, the failed one above all,
    were never counted, so moa_model_calls_total{outcome="failed"} stayed 0 while a model was
    down and every run failed. They are counted from the error's own records, whichever
    route and however the failure was sent (a 502, a stream, the page's error event)."""
    down = fake("AGG", fail=lambda n, m: ConnectionError("down"))
    config = MoAConfig(
        proposers=[fake("C")],
        aggregator=down,
        layers=2,
        on_aggregator_failure="raise",
        retry={"max_attempts": 1},
    )
    client = _metered(create_app({"bad": config}))
    body = {"model": "bad", "messages": USER}
    for route, extra in (
        ("/v1/chat/completions", {}),
        ("/v1/chat/completions", {"stream": True}),
        ("/v1/chat/completions", {"stream": True, "moa_progress": True}),
        ("/v1/moa/runs", {}),
    ):
        client.post(route, content=json.dumps({**body, **extra}), headers=JSON)
    seen = _samples(client.get("/metrics").text)
    assert seen['moa_model_calls_total{model="AGG",outcome="failed"}'] == 4
    assert seen['moa_model_calls_total{model="C",outcome="ok"}'] == 4


def test_metrics_count_the_calls_of_a_run_past_its_request_timeout(fake):
    """A run ended by ``--request-timeout`` answered a 504 whose error carries no calls, so
    neither the proposer that had answered nor the one cut off (cancelled) was counted, and
    its tokens were lost: the calls are counted as they end, and those still running when
    the run stopped as cancelled."""
    from langgraph_moa.config._limits import RequestLimits

    slow = fake("A", delay=lambda n: 30.0)
    config = MoAConfig(proposers=[slow, fake("B")], aggregator=fake("AGG"))
    app = create_app({"m": config}, limits=RequestLimits(request_timeout_s=1))
    client = _metered(app)
    body = json.dumps({"model": "m", "messages": USER})
    assert client.post("/v1/chat/completions", content=body, headers=JSON).status_code == 504
    seen = _samples(client.get("/metrics").text)
    assert seen['moa_model_calls_total{model="B",outcome="ok"}'] == 1
    assert seen['moa_model_tokens_total{model="B"}'] > 0
    assert seen['moa_model_calls_total{model="A",outcome="cancelled"}'] == 1
    assert 'moa_model_calls_total{model="AGG"' not in client.get("/metrics").text


def test_an_allowed_model_is_counted_under_the_label_its_runs_record(system, monkeypatch):
    """``--allow-model OpenAI:gpt-4o`` (or with spaces) was a metrics label as written, while
    a run that names it records ``openai:gpt-4o`` (the policy's spelling): its calls were
    counted as ``other``."""
    from langgraph_moa.serving._metrics import Metrics

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    app = create_app({"m": system}, allow_models=["OpenAI:gpt-4o", " openai:gpt-4o-mini "])
    metrics = Metrics.for_app(app)
    calls = [
        {"configured_model": "openai:gpt-4o", "status": "ok", "attempts": 1},
        {"configured_model": "openai:gpt-4o-mini", "status": "ok", "attempts": 1},
    ]
    metrics.observe("/v1/chat/completions", {"status": 200, "duration_s": 0.1}, calls)
    text = metrics.exposition().decode()
    assert 'moa_model_calls_total{model="openai:gpt-4o",outcome="ok"} 1.0' in text
    assert 'moa_model_calls_total{model="openai:gpt-4o-mini",outcome="ok"} 1.0' in text
    assert 'model="other"' not in text


def test_serve_log_format_json_writes_the_packages_log_records_and_the_drain_as_json(
    monkeypatch, tmp_path, capsys
):
    """Under ``--log-format json`` the crash traceback of a started stream, a local model's
    warning, a history failure and the drain's "Stopping: waiting..." line still came out as
    text, among the JSON lines a pipeline parses. Each is one JSON object now, the traceback
    a field of its record's; the package's loggers are as they were once serving ends."""
    import logging

    import uvicorn

    from langgraph_moa.serving import _server

    def run(server, sockets=None):
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            failed = exc
        errors = logging.getLogger("langgraph_moa.serving._errors")
        errors.error("Request %s failed after its stream had started.", "r-1", exc_info=failed)
        logging.getLogger("langgraph_moa.local").warning("The local server of m died.")
        logging.getLogger("uvicorn.error").info("Waiting for connections to close.")

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    lines: list[str] = []
    handlers = list(logging.getLogger("langgraph_moa").handlers)
    _server.serve(
        {"fake": config}, history_path=tmp_path / "h.db", log=lines.append, log_format="json"
    )
    records = [json.loads(line) for line in lines]
    crash, warning, drain = records
    assert crash["level"] == "error" and crash["message"] == (
        "Request r-1 failed after its stream had started."
    )
    assert "RuntimeError: boom" in crash["traceback"] and "time" in crash
    assert warning["level"] == "warning" and warning["message"] == "The local server of m died."
    assert drain["message"] == _server.DRAIN_LINE
    assert capsys.readouterr().err == ""
    assert logging.getLogger("langgraph_moa").handlers == handlers


def test_metrics_count_the_calls_of_a_run_the_drain_stopped(fake):
    """The drain's error (ServerStoppingError) carries no calls either: a stopping server's
    runs were counted without the calls they had made or cut off."""
    config = MoAConfig(proposers=[fake("A", delay=lambda n: 4.0), fake("B")], aggregator=fake("X"))
    app = create_app({"m": config})
    with _metered(app) as client:

        async def drain() -> None:
            app.state.drain.end_in(0.5)

        client.portal.call(drain)
        client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
        seen = _samples(client.get("/metrics").text)
    assert seen['moa_model_calls_total{model="B",outcome="ok"}'] == 1
    assert seen['moa_model_calls_total{model="A",outcome="cancelled"}'] == 1


def test_an_answer_degraded_for_two_reasons_counts_once_among_the_degraded_answers(system):
    """A fallback that also passed a layer over added one per reason to the answers'
    counter: one answer counted as two. Answers count once; the reasons have their own."""
    from langgraph_moa.serving._metrics import Metrics

    metrics = Metrics.for_app(create_app({"m": system}))
    both = {"status": 200, "duration_s": 0.1, "fallback": "best_proposal", "passed_over": [1]}
    metrics.observe("/v1/chat/completions", both, [])
    metrics.observe("/v1/chat/completions", {**both, "passed_over": None}, [])
    seen = _samples(metrics.exposition().decode())
    assert seen["moa_degraded_answers_total"] == 2
    assert seen['moa_degraded_reasons_total{reason="fallback"}'] == 2
    assert seen['moa_degraded_reasons_total{reason="passed_over"}'] == 1


@pytest.mark.parametrize("started", [False, True])
async def test_a_request_cancelled_inside_the_app_still_writes_its_line(started):
    """A request whose task was cancelled (uvicorn past its shutdown backstop, a client gone
    under a server that cancels) wrote no access-log line at all, nor a metric: it now writes
    one, 499 (nginx's "client closed request") unless its status had gone out, marked
    cancelled."""
    import asyncio

    from tests.helpers import _stalled_exchange

    async def cancelled(scope, receive, send):
        await receive()
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise asyncio.CancelledError

    async def logged(json_lines: bool) -> list[str]:
        lines: list[str] = []
        exchange = _stalled_exchange("/v1/chat/completions", b"{}", reads=10)[:3]
        with pytest.raises(asyncio.CancelledError):
            await AccessLog(cancelled, ["m"], lines.append, json_lines=json_lines)(*exchange)
        return lines

    [line] = await logged(json_lines=True)
    record = json.loads(line)
    assert record["status"] == (200 if started else 499)
    assert record["cancelled"] is True and record["path"] == "/v1/chat/completions"
    [text] = await logged(json_lines=False)
    assert " · cancelled · " in text, text


async def test_a_cut_request_then_cancelled_says_the_same_in_json_and_text():
    """A response the server cut short (`note_cut`) whose task was then cancelled said both
    ``cut`` and ``cancelled`` as JSON, while its text line said only the cut: both say the
    cut alone now, as one rule ranks them."""
    import asyncio

    from langgraph_moa.serving._access import note_cut
    from tests.helpers import _stalled_exchange

    async def cut(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        note_cut(scope, "the run outran its deadline")
        raise asyncio.CancelledError

    async def logged(json_lines: bool) -> str:
        lines: list[str] = []
        exchange = _stalled_exchange("/v1/chat/completions", b"{}", reads=10)[:3]
        with pytest.raises(asyncio.CancelledError):
            await AccessLog(cut, ["m"], lines.append, json_lines=json_lines)(*exchange)
        [line] = lines
        return line

    record = json.loads(await logged(json_lines=True))
    assert record["cut"] == "the run outran its deadline" and "cancelled" not in record
    text = await logged(json_lines=False)
    assert "cut: the run outran its deadline" in text and "cancelled" not in text, text


def _crash_quoting(text):
    """An error as pydantic raises it inside the app: its message quotes the value it
    refused, here a user's message; chained to a cause that quotes it too."""
    try:
        try:
            raise ValueError(f"1 validation error\n  input_value={text!r}, input_type=str")
        except ValueError as cause:
            raise RuntimeError(f"bad body: {{'input': {text!r}, 'loc': ('x',)}}") from cause
    except RuntimeError as exc:
        return exc


def test_a_crash_logged_after_a_stream_started_quotes_no_user_input(caplog):
    """The crash's traceback in the server's log carried its exceptions' messages whole:
    a message quoting the request (a validation error's input) put the user's text in the
    log that the access log keeps it out of. The messages are now the access log's: the
    quoted input is ``[input]``; the frames and exception types stay."""
    from langgraph_moa.serving._errors import _run_failed

    with caplog.at_level("ERROR"):
        _run_failed(_crash_quoting("My name is Ada Lovelace"))
    logged = caplog.text
    assert "Ada Lovelace" not in logged, logged
    assert "[input]" in logged and "RuntimeError" in logged and "ValueError" in logged
    assert "_crash_quoting" in logged  # where it failed: the frames


def test_serve_keeps_user_input_out_of_uvicorns_crash_traceback(monkeypatch, tmp_path):
    """A crash before any response (answered 500) reaches uvicorn, which logs it with its
    traceback: the same messages, quoting the request, were in it whole."""
    import io
    import logging

    written = io.StringIO()

    def run(server, sockets=None):
        logger = logging.getLogger("uvicorn.error")
        handler = logging.StreamHandler(written)
        logger.addHandler(handler)
        try:
            logger.error("Exception in ASGI application", exc_info=_crash_quoting("Ada Lovelace"))
        finally:
            logger.removeHandler(handler)

    _serve_unreachable(monkeypatch, tmp_path, run)
    text = written.getvalue()
    assert "Exception in ASGI application" in text and "[input]" in text, text
    assert "Ada Lovelace" not in text, text


def test_every_start_up_line_is_json_under_log_format_json(monkeypatch, tmp_path):
    """Under --log-format json the start-up lines stayed text among the JSON ones: the
    warnings (bound to every address, no key), "Serving ..." and a history that could not
    be opened. Each is one JSON object now, with its level."""
    import uvicorn
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.serving import _server

    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: None)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    (tmp_path / "file").write_text("")  # the history's folder is a file: a warning
    monkeypatch.setenv("MOA_HISTORY", str(tmp_path / "file" / "h.db"))
    config = tmp_path / "m.yaml"
    config.write_text("proposers: [p@http://127.0.0.1:9/v1]\naggregator: a@http://127.0.0.1:9/v1\n")
    args = ["serve", "--config", str(config), "--host", "0.0.0.0", "--log-format", "json"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # each line one JSON object
    said = " ".join(record["message"] for record in records)
    assert "without an API key" in said and "Serving m on" in said, said
    assert "Serving without a history" in said, said
    assert {record["level"] for record in records} == {"warning", "info"}
    assert all(record["time"].endswith("Z") for record in records)
    text = CliRunner().invoke(cli.app, args[:-2])  # the default: text
    assert "warning:" in text.stderr and not text.stderr.lstrip().startswith("{")
    assert {tuple(sorted(record)) for record in records} == {
        ("level", "logger", "message", "time")
    }, records


def test_the_commands_own_lines_say_their_level_under_log_format_json(capsys):
    """Under --log-format json the command's lines were parsed back from their text: a
    plain line that began with "error: " (a local model's output) was an error, and an
    error of two lines two records. Each line is written as JSON with the level it was said
    at, in the server's record shape."""
    from langgraph_moa.cli._output import out
    from langgraph_moa.cli._serve import _json_stderr

    with _json_stderr():
        out.plain("error: the model said this, not the command")
        out.warn("a warning")
        out.error("first line\nsecond line")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["level"], r["message"]) for r in records] == [
        ("info", "error: the model said this, not the command"),
        ("warning", "a warning"),
        ("error", "first line\nsecond line"),
    ]
    assert {tuple(sorted(record)) for record in records} == {("level", "logger", "message", "time")}


def test_uvicorns_own_lines_are_json_under_log_format_json(monkeypatch, tmp_path):
    """uvicorn's warnings and its crash traceback ("Exception in ASGI application") stayed
    text under --log-format json; they go through the server's log as JSON now."""
    import logging

    def run(server, sockets=None):
        logger = logging.getLogger("uvicorn.error")
        logger.warning("Invalid HTTP request received.")
        logger.error("Exception in ASGI application", exc_info=_crash_quoting("Ada Lovelace"))

    lines = _serve_unreachable(monkeypatch, tmp_path, run, log_format="json")
    warned, crashed = (json.loads(line) for line in lines)
    assert warned["level"] == "warning" and warned["logger"] == "uvicorn.error"
    assert crashed["message"] == "Exception in ASGI application"
    assert "[input]" in crashed["traceback"] and "Ada Lovelace" not in crashed["traceback"]


def test_a_start_that_fails_under_log_format_json_says_why_in_json(monkeypatch, capsys):
    """A taken port (any failure before "Serving") was said in a text line, ``error: Cannot
    listen on ...``, under --log-format json, where every stderr line is one JSON object."""
    import sys

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.serving import _server

    def taken(host: str, port: int) -> None:
        raise MoAConfigError(f"Cannot listen on {host}:{port} (Address already in use).")

    monkeypatch.setattr(_server, "_check_port", taken)
    monkeypatch.setattr(_server, "_check_served", lambda *a: None)
    args = ["moa", "serve", "--preset", "local-moa", "--port", "8123", "--log-format", "json"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as stopped:
        cli._main()
    assert stopped.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in err]  # each line one JSON object
    assert records[-1]["level"] == "error", records
    assert "Cannot listen on 127.0.0.1:8123" in records[-1]["message"], records


def test_the_last_line_of_a_stop_is_json_under_log_format_json(monkeypatch):
    """uvicorn raises the signal it caught again once drained, and the command's handler
    wrote "Terminated." as text, the last stderr line under --log-format json."""
    import signal

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli._serve import _json_stderr

    class Exited(BaseException):
        pass

    written: list[bytes] = []
    monkeypatch.setattr(cli, "_unsaid", [])
    monkeypatch.setattr(cli, "_write_stderr", written.append)
    monkeypatch.setattr(cli, "_exit_interrupted", lambda code: (_ for _ in ()).throw(Exited()))
    with _json_stderr(), pytest.raises(Exited):
        cli._on_interrupt(signal.SIGTERM, None)
    lines = b"".join(written).decode().splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["message"].startswith("Terminated."), lines


def test_a_crash_text_keeps_what_an_exception_group_holds():
    """A task group's crash (anyio's, under starlette's streams) is an ExceptionGroup: its
    traceback in the log named the group alone, never the errors it holds, their types,
    frames or messages."""
    from langgraph_moa.serving._access import crash_text

    def fail() -> None:
        raise LookupError("the upstream index is gone")

    try:
        try:
            fail()
        except LookupError as inner:
            held = [inner, _crash_quoting("Ada Lovelace")]
            raise ExceptionGroup("unhandled errors in a TaskGroup", held) from None
    except ExceptionGroup as group:
        text = crash_text(group)
    assert "ExceptionGroup: unhandled errors in a TaskGroup" in text, text
    assert "LookupError: the upstream index is gone" in text and "in fail" in text, text
    assert "RuntimeError: bad body" in text and "[input]" in text, text
    assert "Ada Lovelace" not in text, text  # each held message read as the access log's


def test_serve_log_format_json_writes_every_line_in_one_shape_with_a_level(monkeypatch, tmp_path):
    """Under ``--log-format json`` the drain's lines were ``{"time", "message"}`` among
    ``{"time", "level", "logger", "message"}`` records: a pipeline keyed on the level lost
    "Stopping: ..." and "Stopped N runs ...". Every line has the same keys now."""
    import asyncio
    import logging

    import uvicorn

    from langgraph_moa.serving import _server
    from langgraph_moa.serving._requests import Drain

    async def shut(server, sockets=None):
        return None

    def end_in(drain, seconds):
        drain.stopped = 2

    def run(server, sockets=None):
        logging.getLogger("langgraph_moa.local").warning("The local server of m died.")
        logging.getLogger("uvicorn.error").info("Waiting for connections to close.")
        asyncio.run(server.shutdown())

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(uvicorn.Server, "shutdown", shut)
    monkeypatch.setattr(Drain, "end_in", end_in)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    lines: list[str] = []
    _server.serve(
        {"fake": config}, history_path=tmp_path / "h.db", log=lines.append, log_format="json"
    )
    records = [json.loads(line) for line in lines]
    assert [record["message"][:8] for record in records] == ["The loca", "Stopping", "Stopped "]
    assert {tuple(sorted(record)) for record in records} == {("level", "logger", "message", "time")}


def test_asyncio_warnings_and_thread_crashes_are_json_under_log_format_json(
    monkeypatch, tmp_path, capsys
):
    """Under --log-format json asyncio's own records ("Task exception was never retrieved"),
    Python's warnings, a thread's uncaught exception and what the model-release thread
    reports through sys.excepthook were written as text among the JSON lines. Each is one
    JSON object now, through the server's log; the hooks are the caller's again after."""
    import asyncio
    import sys
    import threading
    import warnings

    hooks = (sys.excepthook, threading.excepthook, warnings.showwarning)

    def crash(text):
        try:
            raise RuntimeError(text)
        except RuntimeError as exc:
            return exc

    def run(server, sockets=None):
        loop = asyncio.new_event_loop()
        try:
            failed = crash("in a task")
            loop.call_exception_handler(
                {"message": "Task exception was never retrieved", "exception": failed}
            )
        finally:
            loop.close()
        warnings.warn("a deprecated thing", DeprecationWarning, stacklevel=1)
        thread = threading.Thread(target=lambda: (_ for _ in ()).throw(crash("in a thread")))
        thread.start()
        thread.join()
        released = crash("in a release")
        sys.excepthook(type(released), released, released.__traceback__)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        lines = _serve_unreachable(monkeypatch, tmp_path, run, log_format="json")
    assert capsys.readouterr().err == ""
    records = [json.loads(line) for line in lines]  # each line one JSON object
    said = " ".join(r["message"] + r.get("traceback", "") for r in records)
    for text in ("Task exception was never retrieved", "a deprecated thing", "in a thread"):
        assert text in said, records
    assert "in a release" in said and len(records) == 4, records
    assert {r["level"] for r in records} == {"error", "warning"}
    assert (sys.excepthook, threading.excepthook, warnings.showwarning) == hooks


def test_an_embedders_excepthooks_are_set_aside_while_serving_json(monkeypatch, tmp_path, capsys):
    """An embedder's own hooks (Sentry's sys.excepthook reports, then calls the hook it
    replaced: Python's, which prints the traceback as text) are not chained under
    --log-format json, or a crash would write text among the JSON lines. The crash is an
    error record instead (which a logging integration sees); the hooks are back after."""
    import sys
    import threading

    called = []

    def reporting(*args):  # as Sentry's: report, then the default hook prints
        called.append("sys")
        sys.__excepthook__(*args)

    def reporting_in_thread(args):
        called.append("thread")
        threading.__excepthook__(args)

    monkeypatch.setattr(sys, "excepthook", reporting)
    monkeypatch.setattr(threading, "excepthook", reporting_in_thread)

    def run(server, sockets=None):
        thread = threading.Thread(target=lambda: 1 / 0)
        thread.start()
        thread.join()
        try:
            raise RuntimeError("in a release")
        except RuntimeError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)

    lines = _serve_unreachable(monkeypatch, tmp_path, run, log_format="json")
    assert capsys.readouterr().err == "" and called == []
    records = [json.loads(line) for line in lines]
    assert [record["level"] for record in records] == ["error", "error"], records
    assert (sys.excepthook, threading.excepthook) == (reporting, reporting_in_thread)


def test_a_shutdown_delay_keeps_serving_with_ready_503_before_the_stop(monkeypatch, tmp_path):
    """On SIGTERM uvicorn closed its socket at once: a readiness probe was refused, and the
    requests Kubernetes still routed there before it took the pod out met a refused
    connection. With --shutdown-delay, /ready answers 503 "draining" for that long while
    everything else is served, then the stop goes on as before (a second signal, or Ctrl-C,
    stops at once); without it, a SIGTERM stops at once as it did."""
    import asyncio
    import signal

    seen = {}

    def run(server, sockets=None):
        client = TestClient(server.config.app, base_url="http://127.0.0.1")
        server.handle_exit(signal.SIGTERM, None)
        seen["stopped"] = server.should_exit
        seen["ready"] = client.get("/ready")
        seen["models"] = client.get("/v1/models").status_code

        async def ticks() -> bool:
            async with asyncio.timeout(30):
                while not await server.on_tick(1):
                    await asyncio.sleep(0.01)
            return True

        seen["then"] = asyncio.run(ticks())
        seen["signals"] = list(server._captured_signals)

    _serve_unreachable(monkeypatch, tmp_path, run, shutdown_delay_s=0.2)
    assert seen["stopped"] is False and seen["models"] == 200
    assert (seen["ready"].status_code, seen["ready"].json()) == (
        503,
        {"ready": False, "draining": True},
    )
    assert seen["then"] and seen["signals"] == [signal.SIGTERM]  # "Terminated." (143) after

    def again(server, sockets=None):
        server.handle_exit(signal.SIGTERM, None)
        server.handle_exit(signal.SIGTERM, None)  # a second signal: no more waiting
        seen["again"] = server.should_exit

    _serve_unreachable(monkeypatch, tmp_path, again, shutdown_delay_s=60)
    assert seen["again"] is True

    def interrupted(server, sockets=None):
        server.handle_exit(signal.SIGINT, None)  # Ctrl-C: at once
        seen["interrupted"] = server.should_exit

    _serve_unreachable(monkeypatch, tmp_path, interrupted, shutdown_delay_s=60)
    assert seen["interrupted"] is True

    def plain(server, sockets=None):
        server.handle_exit(signal.SIGTERM, None)
        seen["plain"] = server.should_exit

    _serve_unreachable(monkeypatch, tmp_path, plain)
    assert seen["plain"] is True


@pytest.mark.parametrize("option", ["shutdown_delay_s", "drain_timeout_s"])
@pytest.mark.parametrize("seconds", [float("nan"), -1.0, float("inf"), 1e300, 86_401.0])
def test_serve_refuses_seconds_that_are_not_a_finite_number_0_or_more(
    monkeypatch, tmp_path, option, seconds
):
    """`moa serve --shutdown-delay nan` (or -1, inf) exits 2, but ``serve(shutdown_delay_s=)``
    took NaN or -1 as no delay and inf as waiting for a second signal, and a NaN or infinite
    ``drain_timeout_s`` failed in uvicorn's settings with Python's own words. Both are refused
    before "Serving", in a sentence that names the option and the range. 1e300 was the wait
    for ever that inf's refusal stopped: past a day (`MAX_WAIT_S`) is refused too."""
    from langgraph_moa.errors import MoAConfigError

    ran = []
    with pytest.raises(
        MoAConfigError, match=f"{option} must be a number of seconds from 0 to 86400"
    ):
        _serve_unreachable(
            monkeypatch, tmp_path, lambda *a, **k: ran.append(a), **{option: seconds}
        )
    assert ran == []


def test_a_second_signal_during_the_tick_of_a_shutdown_delay_is_not_lost(monkeypatch):
    """The delay's tick set uvicorn's `should_exit` to whether the delay had passed: a second
    SIGTERM (or Ctrl-C) whose handler ran in that tick, after its check, set it True and the
    tick put it back to False, so the server went on waiting for the rest of the delay."""
    import asyncio
    import signal
    import types

    import uvicorn

    from langgraph_moa.serving import _server
    from langgraph_moa.serving._requests import Drain

    server_class = _server._leaves_later(
        _server._stops_on_a_second_signal(uvicorn.Server), Drain(), 60
    )
    server = server_class(uvicorn.Config(app=lambda *_: None, log_config=None))
    server.handle_exit(signal.SIGTERM, None)  # the delay begins
    real = _server.time.monotonic

    def the_clock_as_a_second_signal_arrives() -> float:
        server.handle_exit(signal.SIGTERM, None)  # its handler runs between two bytecodes
        return real()

    clock = types.SimpleNamespace(monotonic=the_clock_as_a_second_signal_arrives)
    monkeypatch.setattr(_server, "time", clock)  # the tick's clock alone, not the loop's
    assert asyncio.run(server.on_tick(1)) is True
    assert server.should_exit
