"""A key in an endpoint URL's query string (``?key=...``) is used for calls, never written.

Some APIs take their key as a query parameter (Google's ``?key=``, signed URLs' ``sig=``).
Such a URL is accepted, so every place that writes or shows a model's name must show the
parameter as ``[redacted]``: the eval's files, the call cache, events, traces, errors.
"""

import asyncio
import re

import pytest

from langgraph_moa import MoAConfig
from langgraph_moa.eval import EvalItem, Evaluation
from langgraph_moa.providers import _models
from tests.fakes import FakeChat

SECRET = "AIzaSyD0nTl34kM3pl3a5e"
URL = f"https://generativelanguage.example.test/v1beta/openai?alt=json&key={SECRET}"
SPEC = f"gemini-flash@{URL}"
SHOWN = "gemini-flash@https://generativelanguage.example.test/v1beta/openai?alt=json&key=[redacted]"

ITEMS = [EvalItem(id="q1", turns=["Say alpha1."], expected=["alpha1"])]


@pytest.fixture
def endpoints_answer(monkeypatch):
    """Every endpoint spec is answered by a fake model; the specs it was built for are kept."""
    built: list = []

    def build(spec, params, **_):
        built.append(spec)
        return FakeChat(label="e", reply=lambda *_: "alpha1")

    monkeypatch.setattr(_models, "build_model", build)
    return built


def _files_holding(folder, secret):
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    )


@pytest.mark.parametrize("spec", [SPEC, {"model": {"base_url": URL, "model": "gemini-flash"}}])
def test_an_evaluation_writes_no_key_of_an_endpoint_url(tmp_path, endpoints_answer, spec):
    config = MoAConfig(name="keyed", proposers=[spec], aggregator=spec)
    evaluation = Evaluation([config], ITEMS, tmp_path, plots=False, exports=False)
    asyncio.run(evaluation.run(progress=False))
    assert endpoints_answer  # the calls were made, to the real URL
    assert all(SECRET in getattr(spec, "base_url", spec) for spec in endpoints_answer)
    assert _files_holding(tmp_path, SECRET) == []
    assert SHOWN in (tmp_path / "provenance.json").read_text()
    assert (tmp_path / "calls.db").is_file()  # looked through too
    assert re.search(r"key=\[redacted\]", (tmp_path / "report.md").read_text())


def test_an_error_that_repeats_the_url_does_not_repeat_its_key():
    from langgraph_moa._redact import describe_error

    error = ConnectionError(f"Cannot reach {URL}&sig=0a1b2c3d4e5f&token=tok3n-value (timed out)")
    text = describe_error(error)
    assert SECRET not in text and "0a1b2c3d4e5f" not in text and "tok3n-value" not in text
    assert "openai?alt=json&key=[redacted]&sig=[redacted]&token=[redacted] (timed out)" in text


@pytest.mark.parametrize(
    "url",
    [
        "https://h.test/v1?api-version=2024-06-01",  # Azure's version: no credential
        "https://h.test/v1?monkey=1&keyboard=2&max_tokens=5",
        "http://127.0.0.1:8080/v1",
    ],
)
def test_a_url_without_credential_parameters_is_shown_as_written(url):
    from langgraph_moa.providers._models import describe_model

    assert describe_model(f"m@{url}") == f"m@{url}"


def _sse_text(text):
    return "\n".join(line for line in text.splitlines() if line.startswith("data: "))


def test_a_served_run_shows_no_key_of_an_endpoint_url(tmp_path, endpoints_answer):
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History

    config = MoAConfig(name="m", proposers=[SPEC, SPEC], aggregator=SPEC)
    lines: list[str] = []
    served = create_app({"m": config}, history=History(tmp_path / "h.sqlite3"))
    app = AccessLog(served, ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost")
    user = [{"role": "user", "content": "Explain X"}]
    page = client.post("/v1/moa/runs", json={"model": "m", "messages": user})
    answer = client.post("/v1/chat/completions", json={"model": "m", "messages": user})
    streamed = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": user, "stream": True, "moa_progress": True},
    )
    runs = client.get("/v1/moa/runs").json()["data"]
    kept = client.get(f"/v1/moa/runs/{runs[0]['id']}")
    assert page.status_code == answer.status_code == streamed.status_code == 200
    assert SHOWN in page.text  # the run's started / finished events name the model
    for shown in (page.text, answer.text, streamed.text, kept.text, "\n".join(lines)):
        assert SECRET not in shown
    assert _files_holding(tmp_path, SECRET) == []


def test_a_missing_key_variable_is_named_without_the_urls_key(monkeypatch):
    from langgraph_moa.errors import MissingAPIKeyError
    from langgraph_moa.providers._models import OpenAIEndpoint, build_model

    monkeypatch.delenv("GEMINI_KEY_FOR_TEST", raising=False)
    endpoint = OpenAIEndpoint(base_url=URL, model="gemini-flash", api_key_env="GEMINI_KEY_FOR_TEST")
    with pytest.raises(MissingAPIKeyError) as caught:
        build_model(endpoint, {})
    assert SECRET not in str(caught.value) and SECRET not in caught.value.spec
    assert f"Model {SHOWN!r} needs the environment variable GEMINI_KEY_FOR_TEST" in str(
        caught.value
    )


def test_a_traced_model_call_records_its_endpoint_url_without_its_key():
    """A tracer (LangSmith's) records the model as it serializes for every chat-model run."""
    from langchain_core.callbacks import BaseCallbackHandler

    from langgraph_moa.providers._models import build_model

    seen: list = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized, messages, **kwargs):
            seen.append((serialized, kwargs))
            raise RuntimeError("recorded")  # no call is made: the record is what matters

    model = build_model(SPEC, {"temperature": 0.7})
    try:
        model.invoke("hi", config={"callbacks": [Recorder()]})
    except Exception:  # the callback's error, or the call that a unit test may not make
        pass
    assert seen, "the tracer saw the call start"
    recorded = repr(seen)
    assert SECRET not in recorded
    assert "'key': '[redacted]'" in recorded  # the query, sent apart from the base URL
    assert seen[0][0]["id"][-1] == "BaseChatOpenAI"  # the record is otherwise as it was
    assert model.default_query == {"alt": "json", "key": SECRET}  # the calls still send it


@pytest.mark.parametrize("key", ["ab'cd-secret-tail", 'ab"cd-secret-tail', "a<b>-secret-tail"])
def test_no_part_of_a_url_key_holding_a_quote_or_angle_bracket_is_shown(key):
    # `redact_url` ends a value at a quote or "<>", as running text does: the label, the
    # repr, an error's quoted spec and the tracer's record showed the rest of such a key.
    from langchain_core.callbacks import BaseCallbackHandler

    from langgraph_moa._redact import redacted_repr, url_secrets
    from langgraph_moa.providers._models import build_model, describe_model

    url = f"https://api.example.test/v1?key={key}&alt=json"
    endpoint = _models.OpenAIEndpoint(base_url=url, model="m")
    assert describe_model(endpoint) == "m@https://api.example.test/v1?key=[redacted]&alt=json"
    assert describe_model(f"m@{url}") == describe_model(endpoint)
    assert key in url_secrets(url)
    seen: list = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized, messages, **kwargs):
            seen.append(serialized)
            raise RuntimeError("recorded")

    try:
        build_model(endpoint, {}).invoke("hi", config={"callbacks": [Recorder()]})
    except Exception:  # the callback's error, or the call that a unit test may not make
        pass
    assert seen, "the tracer saw the call start"
    for shown in (repr(endpoint), redacted_repr(f"m@{url}"), redacted_repr({"m": url}), repr(seen)):
        assert "secret-tail" not in shown, shown


def test_a_configs_repr_shows_no_key_of_a_spec_string():
    # An endpoint object's repr redacted its URL, but a spec written as a string
    # ("m@https://host/v1?key=...") was shown whole by repr() and str() of the config: a
    # debugger, a failed test, a log line's {cfg!r}.
    config = MoAConfig(proposers=[SPEC, "openai:gpt-4o"], aggregator=SPEC)
    for shown in (repr(config), str(config), repr(config.proposers[0])):
        assert SECRET not in shown and SHOWN in shown
    assert config.proposers[0].model == SPEC  # the calls still use it


def test_an_evals_provenance_holds_no_part_of_a_key_holding_a_quote():
    # The config's dump went through `redact_url`, which ends a value at a quote as running
    # text does: provenance.json held the rest of such a key.
    from langgraph_moa.eval.provenance import system_record

    url = "https://api.example.test/v1?key=ab'cd-secret-tail&alt=json"
    endpoint = _models.OpenAIEndpoint(base_url=url, model="m")
    config = MoAConfig(proposers=[endpoint, f"m@{url}"], aggregator="openai:gpt-4o")
    record = repr(system_record(config))
    assert "secret-tail" not in record and "key=[redacted]&alt=json" in record
    assert "Your task is to synthesize" in record  # the prompts are as written


def test_a_single_model_system_named_by_a_keyed_url_is_written_without_its_key(
    tmp_path, endpoints_answer
):
    system = f"single:{SPEC}"
    evaluation = Evaluation(
        [system, "single:other@http://127.0.0.1:9/v1"],
        ITEMS,
        tmp_path,
        plots=False,
        exports=False,
        judge=SPEC,
        baseline=system,  # named as given: it is the system above
        command=f"moa eval --systems '{system}' --judge '{SPEC}'",
    )
    asyncio.run(evaluation.run(progress=False))
    assert _files_holding(tmp_path, SECRET) == []
    summary = (tmp_path / "summary.json").read_text()
    assert f"single:{SHOWN}" in summary
    assert "moa eval --systems 'single:" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("key", [SECRET, "ab'cd-secret-tail"])
def test_a_langsmith_experiment_of_a_keyed_url_is_named_without_its_key(
    tmp_path, endpoints_answer, monkeypatch, key
):
    # A key holding a quote had its rest in the experiment's name and metadata.
    import langsmith

    from langgraph_moa.eval.langsmith_eval import evaluate_system

    given: dict = {}
    monkeypatch.setattr(langsmith, "evaluate", lambda target, **kwargs: given.update(kwargs))
    evaluate_system(
        f"single:{SPEC.replace(SECRET, key)}", [], cache_dir=tmp_path, upload_results=False
    )
    assert key not in repr(given) and "secret-tail" not in repr(given)
    assert given["metadata"] == {"system": f"single:{SHOWN}"}
    assert given["experiment_prefix"] == f"moa-single:{SHOWN}"


@pytest.mark.parametrize("flags", [["--json"], ["--no-stream"], []])
def test_moa_run_shows_no_key_of_an_endpoint_url(monkeypatch, capsys, endpoints_answer, flags):
    from langgraph_moa.cli import _app as cli

    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    argv = ["moa", "run", *flags, "--proposers", SPEC, "--aggregator", SPEC, "Say alpha1."]
    monkeypatch.setattr(cli.sys, "argv", argv)
    try:
        cli.main()
    except SystemExit as exited:
        assert exited.code in (0, None)
    out, err = capsys.readouterr()
    assert "alpha1" in out, err
    assert endpoints_answer
    assert SECRET not in out and SECRET not in err


def test_the_chat_models_answer_metadata_names_the_endpoint_without_its_key(endpoints_answer):
    from langgraph_moa import MoAChatModel

    chat = MoAChatModel(config=MoAConfig(proposers=[SPEC], aggregator=SPEC))
    answer = chat.invoke("Say alpha1.")
    assert answer.text == "alpha1"
    shown = repr(answer.response_metadata)
    assert SECRET not in shown and SHOWN in shown


def test_the_access_log_does_not_write_a_key_a_client_sent_in_a_model_url(endpoints_answer):
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app

    config = MoAConfig(name="m", proposers=[SPEC], aggregator=SPEC)
    lines: list[str] = []
    app = AccessLog(create_app({"m": config}), ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost")
    user = [{"role": "user", "content": "hi"}]
    refused = client.post("/v1/chat/completions", json={"model": SPEC, "messages": user})
    assert refused.status_code in (400, 403, 404)
    assert len(lines) == 1 and SECRET not in lines[0]
    assert "key=[redacted]" in lines[0]


def test_a_model_named_again_is_not_redacted_again(monkeypatch):
    """A role's label names its model on every call (call ids, events, cache keys): the
    redaction of its URL is done once per spec, not once per call (issue 23's budget)."""
    from langgraph_moa.providers._models import OpenAIEndpoint, describe_model

    passes: list[str] = []
    redact_url = _models.redact_url
    monkeypatch.setattr(_models, "redact_url", lambda text: passes.append(text) or redact_url(text))
    endpoint = OpenAIEndpoint(base_url=URL, model="other-model")
    config = MoAConfig(proposers=[SPEC, endpoint], aggregator=SPEC)
    for _ in range(5):
        labels = [p.label for p in config.proposers]
        assert labels == [SHOWN, SHOWN.replace("gemini-flash@", "other-model@")]
        assert describe_model(SPEC) == SHOWN
    assert len(passes) <= 2, passes


@pytest.mark.parametrize("spec", [SPEC, {"model": {"base_url": URL, "model": "gemini-flash"}}])
def test_a_traced_moa_chat_model_run_records_its_config_without_the_urls_key(
    endpoints_answer, spec
):
    """A tracer records MoAChatModel's own run with the model as serialized: its repr, the
    config's model specs in it."""
    from langchain_core.callbacks import BaseCallbackHandler

    from langgraph_moa import MoAChatModel

    seen: list = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized, messages, **kwargs):
            seen.append(serialized)

    chat = MoAChatModel(config=MoAConfig(proposers=[spec], aggregator=spec))
    assert chat.invoke("Say alpha1.", config={"callbacks": [Recorder()]}).text == "alpha1"
    moa = [s for s in seen if s["id"][-1] == "MoAChatModel"]
    assert moa and "key=[redacted]" in moa[0]["repr"]
    assert SECRET not in repr(seen)


def test_a_client_named_endpoints_query_does_not_become_a_process_wide_secret():
    """With --allow-client-endpoints a client names the URL: its ``?key=`` value must not
    join the secrets every error of every client is redacted of (nor grow that list)."""
    from langgraph_moa import _redact
    from langgraph_moa._redact import describe_error
    from langgraph_moa.providers._models import build_model

    known = len(_redact._known)
    build_model("m@http://127.0.0.1:9/v1?token=refused", {})
    build_model("m@http://127.0.0.1:9/v1?key=Connection", {})
    text = describe_error(ConnectionError("Connection refused by 127.0.0.1"))
    assert text.endswith("Connection refused by 127.0.0.1"), text
    assert len(_redact._known) == known


def test_an_error_body_that_echoes_the_requests_key_bare_is_redacted():
    """An upstream's error body may repeat the key alone ("API key ... is not valid"); the
    transport removes the request's own credential parameters from it (no global list)."""
    import httpx2

    from langgraph_moa.transport._http import _redacted_response

    request = httpx2.Request("POST", f"https://h.test/v1/chat/completions?alt=json&key={SECRET}")
    body = f'{{"error": "API key {SECRET} is not valid"}}'.encode()
    response = _redacted_response(request, httpx2.Response(400, content=body), body)
    assert response.text == '{"error": "API key [redacted] is not valid"}'


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # Punctuation no key's alphabet holds, ending a value, is the text's, not the key's.
        ("init(https://h.test/v1?key=AIza-_.~%2Bk3y);", "init(https://h.test/v1?key=[redacted]);"),
        (
            "(see https://h.test/v1?sig=a+b/c==), retry",
            "(see https://h.test/v1?sig=[redacted]), retry",
        ),
        (
            "[https://h.test/v1?token=abcdef1234]; then",
            "[https://h.test/v1?token=[redacted]]; then",
        ),
        ("{url: https://h.test/v1?key=abcdef1234}", "{url: https://h.test/v1?key=[redacted]}"),
        ("https://h.test/v1?api_key=abcdef1234);", "https://h.test/v1?api_key=[redacted]);"),
        # Inside a value it is the key's: all of it goes, as does a key's own '.', '=' or '~'.
        ("https://h.test/v1?key=ab)cd;ef);", "https://h.test/v1?key=[redacted]);"),
        ("https://h.test/v1?key=abcdef1234.", "https://h.test/v1?key=[redacted]"),
        ("https://h.test/v1?key=abcdef==", "https://h.test/v1?key=[redacted]"),
        ("https://h.test/v1?key=abc~def~ ok", "https://h.test/v1?key=[redacted] ok"),
    ],
)
def test_punctuation_after_a_redacted_value_stays_and_no_part_of_the_key_does(text, shown):
    # "key=abc);" was shown "key=[redacted]": the ");" of the text around the URL went too.
    from langgraph_moa._redact import redact, redact_url

    assert redact_url(text) == shown
    assert redact(text) == shown


def test_a_header_like_key_in_a_url_takes_only_its_own_value():
    # redact()'s "api_key=..." shape ran to the next comma: a URL's x-api-key took every
    # parameter after it, and the text after the URL, with it.
    from langgraph_moa._redact import redact

    text = "GET https://h.test/v1?x-api-key=abcdef1234&alt=json failed (timeout)"
    assert redact(text) == "GET https://h.test/v1?x-api-key=[redacted]&alt=json failed (timeout)"


NOT_SECRETS = ["sort_key", "order-key", "partition_key", "model_key", "monkey", "keyword", "oauth"]
SECRETS = [
    "key", "api_key", "apikey", "x-api-key", "access_token", "token", "sig", "signature",
    "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "password", "secret",
    "client_secret", "primary_key", "subscription-key", "model_api_key", "auth",
]  # fmt: skip


@pytest.mark.parametrize("name", NOT_SECRETS)
def test_a_parameter_named_for_what_it_orders_or_picks_is_shown(name):
    # ?sort_key=name or ?model_key=gpt4 were shown as [redacted]: a name ending in "_key"
    # was taken for a credential even where the word before says what the key picks.
    from langgraph_moa._redact import redact, redact_url

    url = f"https://h.test/v1?{name}=created_at&alt=json"
    assert redact_url(url) == url
    assert redact(url) == url


@pytest.mark.parametrize("name", SECRETS)
def test_a_parameter_named_for_a_credential_is_redacted(name):
    from langgraph_moa._redact import redact, redact_url

    url = f"https://h.test/v1?alt=json&{name}=s3cr3tValue9&n=1"
    shown = f"https://h.test/v1?alt=json&{name}=[redacted]&n=1"
    assert redact_url(url) == shown
    assert redact(url) == shown


@pytest.mark.parametrize(
    "text", ["export MY_API_KEY=abcdef1234", "x-api-key: abcdef1234", '{"api_key": "abcdef1234"}']
)
def test_a_key_outside_a_url_is_still_redacted(text):
    from langgraph_moa._redact import redact

    assert "abcdef1234" not in redact(text)


def test_a_config_printed_or_reprd_shows_no_key_of_an_endpoint_url():
    # repr() of a config (a debugger, a test's failure, an f"{cfg!r}" in a log line) showed
    # an endpoint's base_url whole, ?key=... included, though every label hid it.
    from langgraph_moa.providers._models import OpenAIEndpoint

    endpoint = {"base_url": URL, "model": "m"}
    cfg = MoAConfig(proposers=[{"model": endpoint}], aggregator={"model": endpoint})
    for shown in (repr(cfg), str(cfg), repr(cfg.proposers[0]), repr(OpenAIEndpoint(**endpoint))):
        assert SECRET not in shown and "key=[redacted]" in shown, shown
    assert cfg.proposers[0].model.base_url == URL  # still called with it


@pytest.mark.parametrize(
    "spec",
    [
        f"mystery@ftp://h.test/v1?key={SECRET}",  # not an endpoint: read as provider:model
        f"nosuch:gemini?key={SECRET}",
        ["not", f"a spec?key={SECRET}"],
    ],
)
def test_a_refused_model_spec_is_repeated_without_its_urls_key(spec):
    # "Unknown model provider in 'mystery@ftp://h.test/v1?key=...'" repeated the key whole:
    # the CLI prints it, `moa serve` logs it.
    from langgraph_moa.errors import MoAConfigError

    with pytest.raises(MoAConfigError) as refused:
        MoAConfig(proposers=[{"model": spec}], aggregator={"model": "openai:gpt-4o"})
    said = str(refused.value)
    # A spec is repeated with its key redacted; a list is named by its type, not written out.
    assert SECRET not in said and ("key=[redacted]" in said or "got a list" in said), said


@pytest.mark.parametrize(
    "text",
    [
        # OAuth's implicit flow hands the token back in the fragment, not the query.
        "redirected to https://app.test/cb#access_token=s3cr3tValue9&token_type=bearer",
        # Go's JSON escapes '&' as \u0026: an upstream repeating the URL in a JSON body.
        '{"error": "bad url https://h.test/v1?alt=json\\u0026key=s3cr3tValue9"}',
    ],
)
def test_a_key_in_a_fragment_or_after_a_json_escaped_ampersand_is_redacted(text):
    from langgraph_moa._redact import redact, redact_url

    assert "s3cr3tValue9" not in redact_url(text)
    assert "s3cr3tValue9" not in redact(text)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        "?key=" * 200_000,
        "?key=" + ")" * 1_000_000,
        ";key=" + ";" * 1_000_000,
        (";key=" + ")" * 40 + "&") * 20_000,
        ("#" + "a_" * 500) * 1_000,
        "?a" + "_" * 1_000_000,
        ("\\u0026" + "x-" * 100) * 5_000,
        "api_key" + " " * 1_000_000,
        "a" + "-a" * 500_000,
    ],
    ids=[
        "key-repeats",
        "paren-run",
        "semicolon-run",
        "short-runs",
        "fragments",
        "name-run",
        "json-amps",
        "header-spaces",
        "scheme-run",
    ],
)
def test_redaction_stays_linear_on_a_megabyte_of_hostile_text(text):
    # Error bodies are untrusted: a pattern that backtracks quadratically would hang a
    # request (or `moa serve`) on one crafted megabyte. A run of a URL scheme's characters
    # ("a-a-a...") was read as a scheme from each of its words, to its end each time.
    from langgraph_moa._redact import redact, redact_spec, redact_url

    assert len(redact_url(text)) > 0
    assert len(redact(text)) > 0
    assert len(redact_spec(text)) > 0


def test_every_error_repeating_a_model_spec_hides_its_urls_key(tmp_path):
    # The model-spec errors of the providers hid the key; these others repeated the spec
    # whole: a per-call model= the select variant cannot honor, an eval system that is
    # neither a preset nor a file, a `single:` system whose spec is refused,
    # an --allow-model spec refused, a --proposers list with an empty item.
    from langgraph_moa.chat_model import model_override
    from langgraph_moa.cli._config import model_list
    from langgraph_moa.errors import MoAError
    from langgraph_moa.eval.runner import resolve_system, single_model
    from langgraph_moa.run.cache import SQLiteCallCache
    from langgraph_moa.serving._policy import _check_allowed_spec

    bad_scheme = f"mystery@ftp://h.test/v1?alt=json&key={SECRET}"
    select = MoAConfig(variant="select", proposers=["m@http://h.test/v1"])
    refusals = [
        lambda: model_override(select, SPEC),
        lambda: resolve_system(SPEC, SQLiteCallCache(tmp_path / "c.sqlite")),
        lambda: single_model("single:" + bad_scheme),
        lambda: _check_allowed_spec(bad_scheme),
        lambda: model_list("--proposers", f"{SPEC},,"),
    ]
    for refuse in refusals:
        with pytest.raises((MoAError, ValueError)) as caught:
            refuse()
        message = str(caught.value)
        assert SECRET not in message and "key=[redacted]" in message, message


@pytest.mark.parametrize(
    ("written", "echoed"),
    [
        ("Ab1%2bq%2Fz9xYw%3d", "Ab1%2Bq%2Fz9xYw%3D"),  # its escapes' hex in the other case
        ("Ab1+q/z9xYw=", "Ab1%2Bq%2Fz9xYw%3D"),  # escaped in full
        ("Ab1%2Bq%2Fz9xYw%3D", "Ab1%2bq%2fz9xYw%3d"),
        ("Ab1+q/z9xYw=", "Ab1 q/z9xYw="),  # a query's '+' read as a space, as forms do
        ("Ab1%20q%2Fz9xYw", "Ab1+q%2Fz9xYw"),  # a space escaped as forms do
        ("AIzaSyBr0k3nStr3am0", "aizasybr0k3nstr3am0"),  # re-cased: guessed back in a few tries
    ],
)
@pytest.mark.parametrize("path", ["transport", "mid-stream"])
def test_a_key_echoed_escaped_or_cased_otherwise_than_its_url_is_redacted(written, echoed, path):
    """The request's ?key=... was removed from an upstream's error only as its URL wrote it
    and fully unescaped: echoed with its escapes' hex in the other case, escaped in full or
    read as a form reads a query, the same key was shown, in a non-200 error body (the
    transport) and in a 200 stream's error event (describe_error, from error.request)."""
    import httpx2

    from langgraph_moa._redact import describe_error
    from langgraph_moa.transport._http import _redacted_response

    request = httpx2.Request("POST", f"https://h.test/v1/chat/completions?key={written}")
    message = f"API key {echoed} is not valid"
    if path == "transport":
        body = message.encode()
        shown = _redacted_response(request, httpx2.Response(400, content=body), body).text
    else:
        error = RuntimeError(message)
        error.request = request  # as the openai SDK's APIError carries it
        shown = describe_error(error)
    assert "API key [redacted] is not valid" in shown, shown


def test_two_keys_to_one_endpoint_do_not_share_cached_answers():
    # The call cache named an endpoint by its redacted label: a URL's other key (another
    # account, another deployment behind one gateway) was served the first key's answers.
    # It is keyed by a one-way digest of the whole URL now, and no key is stored.
    # (`test_an_evaluation_writes_no_key_of_an_endpoint_url` looks through the cache file.)
    from langgraph_moa.run._calls import cache_name

    other = SPEC.replace(SECRET, "AIzaSyOtherAccountKey42")
    assert cache_name(SPEC, "x") != cache_name(other, "x")
    assert cache_name(SPEC, "x") == cache_name(SPEC, "y")  # still the model, whatever the role
    endpoint = _models.OpenAIEndpoint(base_url=URL, model="gemini-flash")
    assert cache_name(endpoint, "x") == cache_name(SPEC, "x")  # one spec, two spellings
    for name in (cache_name(SPEC, "x"), cache_name(endpoint, "x")):
        assert SECRET not in name and name.startswith(SHOWN), name
    assert cache_name("m@http://h:8000/v1", "x") == "m@http://h:8000/v1"  # keyless: as it was


def test_langchains_warning_for_an_inferred_provider_does_not_repeat_the_key():
    # A bare "gemini-..." spec has its provider guessed by LangChain, which warns that the
    # guess will change and repeats the spec it was given: its URL's key included.
    import warnings

    spec = f"gemini-flash?alt=json&key={SECRET}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider, name = _models.split_provider(spec)
    assert (provider, name) == ("google_vertexai", spec)  # the calls still get the key
    assert caught, "LangChain no longer warns: this test shows nothing"
    for warning in caught:
        assert SECRET not in str(warning.message), warning.message


@pytest.mark.parametrize("key", ['ab"cd-secret-tail', "ab'cd-secret-tail", "ab<cd>secret-tail"])
def test_the_access_log_shows_no_part_of_a_quoted_key_a_client_sent(key):
    # The log line's model went through `redact_url`, which ends a value at a quote or
    # "<>" as in running text: the rest of such a key was written to the access log.
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app

    config = MoAConfig(name="m", proposers=[SPEC], aggregator=SPEC)
    lines: list[str] = []
    app = AccessLog(create_app({"m": config}), ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost")
    model = f"m@https://api.example/v1?key={key}&alt=json"
    client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert len(lines) == 1 and "secret-tail" not in lines[0]
    assert "key=[redacted]&alt=json" in lines[0]


def test_the_failed_models_named_in_the_log_line_show_no_part_of_a_quoted_key():
    # The access log names the models of a run's failed calls; a client's own endpoint may
    # be one, and `redact_url` ends a value at a quote or "<>" as in running text.
    from langgraph_moa.serving._access import _named

    line = _named(['m@https://api.example/v1?key=ab"cd-secret-tail&alt=json', "local"])
    assert "secret-tail" not in line and "key=[redacted]&alt=json" in line, line
