"""The web page of `moa serve`, in a real browser, against a fake backend that streams slowly.

`moa serve` runs as a process on two config files whose models live on the fault-injecting
server: proposers that write a word every 0.1-0.25 s (so that intermediate states can be
seen), one whose answer carries HTML meant to run, one that always fails, and an aggregator
that streams too. Screenshots land in test-artifacts/ui/.
"""

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from langgraph_moa.testing.fault_server import FaultProfile, FaultServer
from langgraph_moa.testing.scripted_server import THOUGHT
from langgraph_moa.text._thinking import ThinkingCut
from langgraph_moa.transport._net import free_port
from tests.helpers import wait_until_up
from tests.integration_tests.browser import (
    ARTIFACTS,
    chromium,
    console_errors,
    quit_browser,
    require_browser,
    screenshot,
)

HOSTILE = '<script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> beta says 42'
QUESTION = "What is six times seven?"
MARKDOWN = (
    '## Result\n\nIt is **42**, see `6*7`.\n\n- one <img src=x onerror="window.pwned=3">\n'
    "- two <script>window.pwned=4</script>\n\n```\n<b>not bold</b>\n```"
)

REFERENCE = "the sky is blue because of scattering of light"
EMOJI_ANSWER = "\U0001f600\U0001f600\U0001f600 the sky is blue because of scattering indeed"
RTL = "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"
"""Arabic ("hello world"): a right-to-left answer."""


THINKER = f"<think>\n{THOUGHT}\n</think>\n\nSeven times two makes 14: two sevens are fourteen."
"""A reasoning model's reply as it writes it: its thinking (a wrong draft), then the answer."""


LONG_WORDS = 5000
"""A long answer, streamed one word per token as fast as the server can send it."""


PRICED = ["alpha", "beta", "broken", "agg", "v42", "v41"]
"""The fake models, priced by `moa serve --prices`: every run's provenance shows its cost."""


@pytest.fixture(scope="module")
def backend():
    profiles = {
        "alpha": FaultProfile(token_s=0.25, reply_words=14),
        "beta": FaultProfile(token_s=0.1, reply_text=HOSTILE),
        "broken": FaultProfile(error_rate=1.0, errors=["400"]),
        "agg": FaultProfile(token_s=0.15, reply_words=16),
        "v42": FaultProfile(token_s=0.05, reply_text="I make it 42"),
        "v41": FaultProfile(token_s=0.05, reply_text="I make it 41"),
        "markdown": FaultProfile(reply_text=MARKDOWN),
        "ranker": FaultProfile(reply_text="Response 2 is the better one"),
        "cutagg": FaultProfile(error_rate=1.0, errors=["cut"], reply_words=20, token_s=0.02),
        "slow": FaultProfile(token_s=0.2, reply_words=40),
        "ref": FaultProfile(reply_text=REFERENCE),
        "emoji": FaultProfile(reply_text=EMOJI_ANSWER),
        "rtl": FaultProfile(reply_text=RTL),
        "long": FaultProfile(reply_words=LONG_WORDS),
        "thinker": FaultProfile(token_s=0.2, reply_text=THINKER),
        "cutprop": FaultProfile(reply_text="Step one: 6 times", finish_reason="length"),
        "cutans": FaultProfile(reply_text="The answer is", finish_reason="length"),
    }
    with FaultServer(profiles) as server:
        yield server


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory):
    """`moa serve` on two config files of fake models; yields its root URL."""
    folder = tmp_path_factory.mktemp("ui")
    url = backend.url
    moa = {
        "variant": "moa",
        "layers": 2,
        "proposers": [f"alpha@{url}", f"beta@{url}", f"broken@{url}"],
        "aggregator": f"agg@{url}",
        "retry": {"max_attempts": 1},
    }
    vote = {
        "variant": "select",
        "proposers": [f"v42@{url}", f"beta@{url}", f"v41@{url}"],
        "selection": {"method": "vote"},
    }
    (folder / "fake-moa.yaml").write_text(yaml.safe_dump(moa))
    (folder / "fake-vote.yaml").write_text(yaml.safe_dump(vote))
    port = free_port()
    env = {**os.environ, "MOA_HISTORY": str(folder / "history.sqlite3")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd() / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "langgraph_moa", "serve", "--port", str(port)]
    command += ["-p", str(folder / "fake-moa.yaml"), "-p", str(folder / "fake-vote.yaml")]
    prices = {name: {"prompt": 1.0, "completion": 4.0} for name in PRICED}
    (folder / "prices.yaml").write_text(yaml.safe_dump(prices))
    command += ["--prices", str(folder / "prices.yaml")]
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{root}/v1/models", proc, 60, lambda: (folder / "serve.log").read_text())
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def browser():
    require_browser()
    driver = chromium()
    try:
        yield driver
    finally:
        quit_browser(driver)


def wait(driver, condition, timeout=30.0, what="the page"):
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({condition});")
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {condition}"
        time.sleep(0.05)


def card(driver, key: str) -> dict:
    return driver.execute_script(
        """const c = document.querySelector(`.pane:last-child .card[data-key="${arguments[0]}"]`);
        return c && {status: c.dataset.status, text: c.querySelector('.text').textContent,
          error: c.querySelector('.error').textContent, model: c.querySelector('.model').textContent,
          stats: c.querySelector('.stats').textContent,
          elements: c.querySelector('.text').children.length};""",
        key,
    )


ALPHA, BETA, BROKEN, AGG = (
    "proposer:1:0:0",
    "proposer:1:1:0",
    "proposer:1:2:0",
    "aggregator:2:-1:0",
)


def test_page_shows_every_model_streaming_then_the_answer_and_history(served, browser):
    d = browser
    d.get(f"{served}/ui")
    wait(d, "document.querySelectorAll('#preset option').length === 2", what="the served models")
    d.execute_script("document.getElementById('preset').value = 'fake-moa'")
    d.find_element("id", "question").send_keys(QUESTION)
    d.find_element("id", "ask-button").click()

    # Every proposer's card appears while the layer runs.
    wait(d, "document.querySelectorAll('.card[data-role=proposer]').length === 3", what="3 cards")
    # Tokens arrive progressively: alpha's card shows part of its text, still running.
    wait(
        d,
        "document.querySelector('.card[data-key=\"proposer:1:0:0\"] .text').textContent.split(' ').length >= 3",
    )
    early = card(d, ALPHA)
    assert early["status"] == "running"
    screenshot(d, "1-proposers-streaming")
    wait(d, f"document.querySelector('.card[data-key=\"{ALPHA}\"]').dataset.status === 'done'")
    done = card(d, ALPHA)
    assert done["text"].startswith(early["text"]) and len(done["text"]) > len(early["text"])
    assert done["text"].split()[-1] == "w10"  # the whole answer arrived, word by word
    assert "tokens" in done["stats"] and " s " in done["stats"]

    # The failed proposer shows its one-line error.
    broken = card(d, BROKEN)
    assert broken["status"] == "failed"
    assert "injected 400 for broken" in broken["error"]
    assert "\n" not in broken["error"]

    # The synthesis streams: seen mid-way, then the final answer and its provenance.
    wait(d, f"document.querySelector('.card[data-key=\"{AGG}\"] .text')?.textContent.length > 0")
    assert card(d, AGG)["status"] == "running"
    assert d.execute_script("return document.querySelector('.answer').textContent.length") > 0
    screenshot(d, "2-synthesis-streaming")
    wait(d, "document.querySelector('.pane').dataset.done === 'done'", what="the run's end")
    answer = d.execute_script("return document.querySelector('.answer').textContent")
    assert answer.startswith("agg answer")
    provenance = d.execute_script("return document.querySelector('.provenance').textContent")
    assert "4 calls (1 failed)" in provenance and "critical path" in provenance
    assert re.search(r"cost \$\d+\.\d{4}", provenance) and "unpriced" not in provenance
    overlap = d.execute_script(
        f"return document.querySelector('.card[data-key=\"{ALPHA}\"] .overlap').textContent"
    )
    assert "% of the answer shared" in overlap

    # Model text is text: the hostile proposal shows its markup, and none of it ran.
    beta = card(d, BETA)
    assert beta["text"] == HOSTILE
    assert beta["elements"] == 0
    assert (
        d.execute_script("return document.querySelectorAll('.pane script, .pane img').length") == 0
    )
    assert d.execute_script("return window.pwned === undefined")

    # The run is in the history.
    wait(d, "document.querySelectorAll('#history-list li').length === 1", what="the history")
    assert QUESTION in d.find_element("id", "history-list").text
    screenshot(d, "3-answer")

    # Re-asked with the vote preset, side by side: the tally, the pick, who agrees.
    d.execute_script(
        "const s = document.querySelector('.pane .reask select'); s.value = 'fake-vote';"
        "document.querySelector('.pane .reask-button').click();"
    )
    wait(d, "document.querySelectorAll('.pane').length === 2", what="a second pane")
    wait(d, "document.querySelectorAll('.pane')[1].dataset.done === 'done'", what="the vote")
    tally = d.execute_script(
        "return document.querySelectorAll('.pane')[1].querySelector('.tally').textContent"
    )
    assert "42" in tally and "41" in tally and "Picked because" in tally
    picked = d.execute_script(
        "return document.querySelectorAll('.pane')[1].querySelector('tr.picked').textContent"
    )
    assert "42" in picked and "2" in picked
    agree = d.execute_script(
        "return document.querySelectorAll('.pane')[1].querySelectorAll('.card.agree').length"
    )
    assert agree == 2  # v42 and beta agree on 42
    ring = d.execute_script(
        "return getComputedStyle(document.querySelectorAll('.pane')[1]"
        ".querySelector('.card.agree')).boxShadow"
    )
    assert ring.startswith("rgb(") and "2px" in ring, ring  # the palette's tone, drawn
    assert d.execute_script("return window.pwned === undefined")
    wait(
        d, "document.querySelectorAll('#history-list li').length === 2", what="both runs in history"
    )
    screenshot(d, "4-side-by-side")

    # Reopened from the history: the same cards and answer, drawn from the stored events.
    d.get(f"{served}/ui")
    wait(d, "document.querySelectorAll('#history-list li').length === 2")
    d.execute_script("document.querySelectorAll('#history-list .h-open')[1].click()")
    wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the reopened run")
    assert card(d, ALPHA)["text"] == done["text"]
    assert card(d, BETA)["text"] == HOSTILE
    assert card(d, BROKEN)["status"] == "failed"
    assert d.execute_script("return document.querySelector('.answer').textContent").startswith(
        "agg answer"
    )
    assert d.execute_script("return window.pwned === undefined")


@pytest.mark.local_models
def test_a_real_run_on_the_local_models_through_the_page(local_models_available, tmp_path):
    """`moa ui` on the embedded local models: every card streams, then the synthesis."""
    require_browser()
    port = free_port()
    env = {**os.environ, "MOA_HISTORY": str(tmp_path / "history.sqlite3")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd() / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "langgraph_moa", "ui", "--no-open", "--port", str(port)]
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [*command, "-p", "local-moa"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    root = f"http://127.0.0.1:{port}"
    driver = None
    try:
        wait_until_up(f"{root}/v1/models", proc, 60, lambda: (tmp_path / "ui.log").read_text())
        driver = chromium()
        driver.get(f"{root}/ui")
        wait(driver, "document.querySelectorAll('#preset option').length === 1")
        driver.find_element("id", "question").send_keys("In one sentence: why is the sky blue?")
        driver.find_element("id", "ask-button").click()
        seen_mid_way = False
        deadline = time.monotonic() + 600
        while driver.execute_script("return document.querySelector('.pane')?.dataset.done") is None:
            assert time.monotonic() < deadline, "the local run did not finish within 600 s"
            seen_mid_way = seen_mid_way or driver.execute_script(
                "return [...document.querySelectorAll('.card[data-role=proposer]')].some("
                "c => c.dataset.status === 'running' && c.querySelector('.text').textContent)"
            )
            time.sleep(0.05)
        screenshot(driver, "local-moa")
        assert (
            driver.execute_script("return document.querySelector('.pane').dataset.done") == "done"
        )
        assert seen_mid_way, "no proposer card was ever seen with part of its text"
        for key in ("proposer:1:0:0", "proposer:1:1:0", "aggregator:2:-1:0"):
            state = card(driver, key)
            assert state["status"] == "done" and state["text"].strip(), key
            assert "tokens" in state["stats"]
        answer = driver.execute_script("return document.querySelector('.answer').textContent")
        assert answer.strip()
        assert "3 calls (0 failed)" in driver.execute_script(
            "return document.querySelector('.provenance').textContent"
        )
        wait(driver, "document.querySelectorAll('#history-list li').length === 1")
    finally:
        if driver is not None:
            quit_browser(driver)
        proc.terminate()
        proc.wait(timeout=30)


def test_with_a_key_the_page_asks_for_it_and_runs_only_allowed_models(backend, browser, tmp_path):
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(variant="select", proposers=[f"v42@{backend.url}", f"v41@{backend.url}"])
    md = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    ranked = MoAConfig(
        variant="ranker",
        proposers=[f"v42@{backend.url}", f"v41@{backend.url}"],
        aggregator=f"ranker@{backend.url}",
    )
    systems = {"keyed": config, "md": md, "ranked": ranked}
    app = create_app(
        systems,
        api_key="sekret",
        history=History(tmp_path / "h.db"),
        allow_models=[f"markdown@{backend.url}"],
    )
    with BackgroundServer(app) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "!document.getElementById('key-box').hidden", what="the key prompt")
        assert "API key" in d.find_element("id", "notice").text
        assert d.execute_script("return document.querySelectorAll('#preset option').length") == 0
        d.find_element("id", "api-key").send_keys("wrong")
        d.find_element("id", "key-save").click()
        wait(d, "!document.getElementById('key-box').hidden", what="the prompt again")
        d.find_element("id", "api-key").clear()
        d.find_element("id", "api-key").send_keys("sekret")
        d.find_element("id", "key-save").click()
        wait(d, "document.querySelectorAll('#preset option').length === 3", what="the models")
        d.find_element("id", "question").send_keys("Which number?")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        assert "Picked because" in d.execute_script(
            "return document.querySelector('.tally').textContent"
        )
        # A ranker's pick: which response, its reply, the card marked.
        d.execute_script("document.getElementById('preset').value = 'ranked'")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the ranker")
        ranker = d.execute_script("return document.querySelector('.ranker').textContent")
        assert "picked response 2" in ranker and "Response 2 is the better one" in ranker
        winner = d.execute_script("return document.querySelector('.card.winner').dataset.key")
        assert winner == "proposer:1:1:0"
        assert d.execute_script("return document.querySelector('.answer').textContent") == (
            "I make it 41"
        )

        # The answer is Markdown made of elements the page builds; its HTML stays text.
        d.find_element("css selector", "#models-box summary").click()
        d.find_element("id", "aggregator").send_keys(f"markdown@{backend.url}")
        d.execute_script("document.getElementById('preset').value = 'md'")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the md run")
        shape = d.execute_script(
            "const a = document.querySelector('.answer');"
            "return [...a.querySelectorAll('*')].map(e => e.tagName.toLowerCase()).join(' ');"
        )
        assert shape == "h4 p strong code ul li li pre code"
        items = d.execute_script(
            "return [...document.querySelectorAll('.answer li')].map(li => li.textContent)"
        )
        assert items == [
            'one <img src=x onerror="window.pwned=3">',
            "two <script>window.pwned=4</script>",
        ]
        assert d.execute_script("return document.querySelector('.answer pre').textContent") == (
            "<b>not bold</b>"
        )
        assert d.execute_script("return window.pwned === undefined")
        d.find_element("id", "aggregator").clear()
        d.execute_script("document.getElementById('preset').value = 'keyed'")

        # Other models: only those the operator allows; a refusal is shown, not run.
        d.find_element("id", "proposers").send_keys("openai:gpt-4o")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane-error')?.textContent.includes('not enabled')")
        d.find_element("id", "proposers").clear()
        d.find_element("id", "proposers").send_keys(f"v41@{backend.url}")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the override")
        assert d.execute_script("return document.querySelectorAll('.card').length") == 1
        assert "41" in d.execute_script("return document.querySelector('.answer').textContent")


def test_a_fallback_aggregator_writes_the_answer_afresh(backend, browser, tmp_path):
    """The first aggregator streams half its answer and drops, twice; the fallback's answer
    replaces what it wrote while it streams, not only at the end."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(
        proposers=[f"v42@{backend.url}"],
        aggregator=f"cutagg@{backend.url}",
        aggregator_fallbacks=[f"agg@{backend.url}"],
        layers=2,
        retry={"max_attempts": 2, "initial_interval": 0.1, "jitter": False},
    )
    degraded = MoAConfig(
        proposers=[f"v42@{backend.url}"],
        aggregator=f"broken@{backend.url}",
        layers=2,
    )
    app = create_app({"fb": config, "degraded": degraded}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 2")
        d.find_element("id", "question").send_keys("Fallback?")
        d.find_element("id", "ask-button").click()
        cut = "aggregator:2:-1:0"
        wait(
            d,
            f"document.querySelector('.card[data-key=\"{cut}\"]')?.textContent.includes('cutagg')",
        )
        fallback = "aggregator:2:-1:1"
        wait(
            d,
            f"document.querySelector('.card[data-key=\"{fallback}\"] .text')?.textContent.length > 0",
        )
        mid = d.execute_script("return document.querySelector('.answer').textContent")
        assert mid.startswith("agg") and "cutagg" not in mid
        wait(d, "document.querySelector('.pane').dataset.done === 'done'", what="the run")
        assert card(d, cut)["status"] == "failed" and "1 retries" in card(d, cut)["stats"]
        assert card(d, fallback)["status"] == "done"
        answer = d.execute_script("return document.querySelector('.answer').textContent")
        assert answer.startswith("agg answer") and "cutagg" not in answer

        # With no aggregator left, the best proposal answers, labelled as such.
        d.execute_script("document.getElementById('preset').value = 'degraded'")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'degraded'", what="the label")
        label = d.execute_script("return document.querySelector('.answer .fallback').textContent")
        assert label.startswith("Degraded answer (best_proposal)") and "injected 400" in label
        assert "I make it 42" in d.execute_script(
            "return document.querySelector('.answer').textContent"
        )


def test_a_proposal_and_an_answer_cut_by_max_tokens_say_so(backend, browser, tmp_path):
    """max_tokens cut a proposal and the answer (finish_reason "length"): the page showed the
    proposal's card as plainly done and the answer as whole. Both now say they were cut."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    url = backend.url
    config = MoAConfig(
        proposers=[f"v42@{url}", f"cutprop@{url}"], aggregator=f"cutans@{url}", layers=2
    )
    app = create_app({"cut": config}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        ask_the_only_preset(d, server.root, "Cut?")
        status = "document.querySelector('.card[data-key=\"{}\"] .status').textContent"
        assert d.execute_script(f"return {status.format('proposer:1:1:0')}").endswith(
            "(cut off at max_tokens)"
        )
        assert d.execute_script(f"return {status.format('proposer:1:0:0')}") == "done"
        label = d.execute_script("return document.querySelector('.answer .fallback').textContent")
        assert label.startswith("Cut-off answer")


def ask_the_only_preset(d, root: str, question: str) -> None:
    """Open the page of a server of one preset, ask `question` and wait until the run ends."""
    d.get(f"{root}/ui")
    wait(d, "document.querySelectorAll('#preset option').length === 1")
    d.find_element("id", "question").send_keys(question)
    d.find_element("id", "ask-button").click()
    wait(d, "document.querySelector('.pane')?.dataset.done", what="the run")


def pane_state(driver) -> dict:
    return driver.execute_script(
        """const p = document.querySelector('.pane');
        return {done: p.dataset.done || null, status: p.querySelector('.pane-status').textContent,
          error: p.querySelector('.pane-error').textContent,
          cards: [...p.querySelectorAll('.card')].map(c => c.dataset.status)};"""
    )


def start(driver, root: str, preset: str, question: str = "Why is the sky blue?") -> None:
    driver.get(f"{root}/ui")
    wait(
        driver,
        f"[...document.querySelectorAll('#preset option')].some(o => o.value === '{preset}')",
    )
    driver.execute_script(f"document.getElementById('preset').value = '{preset}'")
    driver.find_element("id", "question").send_keys(question)
    driver.find_element("id", "ask-button").click()


def test_a_run_replaced_by_a_new_one_stops_on_the_server(backend, browser, tmp_path):
    """Asking again while a run streams drops its pane; its stream is closed, so the server
    cancels its calls instead of running it to the end for nobody."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"slow@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    history = History(tmp_path / "h.db")
    with BackgroundServer(create_app({"slow": config}, history=history)) as server:
        d = browser
        start(d, server.root, "slow", "first")
        wait(d, "document.querySelector('.card .text')?.textContent.length > 0")
        d.find_element("id", "question").clear()
        d.find_element("id", "question").send_keys("second")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the 2nd run")
        wait(d, "document.querySelectorAll('#history-list li').length === 2", what="both runs")
        runs = {r["question"]: r["status"] for r in history.list()}
        assert runs == {"first": "cancelled", "second": "done"}


class CutStream:
    """Ends the run event stream cleanly after `limit` bytes, as a proxy that gives up on a
    long response might: no error, just no more events."""

    def __init__(self, app, limit: int = 700) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/v1/moa/runs":
            return await self.app(scope, receive, send)
        sent, ended = 0, False

        async def cut(message):
            nonlocal sent, ended
            if ended:
                return
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if sent + len(body) >= self.limit:
                    ended = True
                    body = body[: self.limit - sent]
                    message = {"type": "http.response.body", "body": body, "more_body": False}
                sent += len(body)
            await send(message)

        await self.app(scope, receive, cut)


def test_a_stream_that_ends_before_the_run_does_says_so(backend, browser, tmp_path):
    """The event stream stops without the run's 'done' (a proxy cut it, the server went
    away): the pane says the connection ended, and no card is left 'running'."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"slow@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    with BackgroundServer(CutStream(create_app({"slow": config}))) as server:
        d = browser
        start(d, server.root, "slow")
        wait(d, "document.querySelector('.pane-error').textContent", what="the pane's error")
        state = pane_state(d)
        assert "connection" in state["error"] and "before the run finished" in state["error"]
        assert "running" not in state["status"] and state["done"] == "disconnected"
        assert state["cards"] and "running" not in state["cards"]


def test_a_run_stopped_mid_answer_labels_the_partial_answer(backend, browser, tmp_path):
    """The run's deadline passes while the aggregator writes: its text stays, marked as the
    incomplete answer of a failed run, and its card says it was stopped. Its error is an
    alert; reopened from the history, it is not (it was read out again as if just failed)."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.config import RequestLimits
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"slow@{backend.url}", layers=2)
    limits = RequestLimits(request_timeout_s=2)
    app = create_app({"slow": config}, limits=limits, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        start(d, server.root, "slow")
        wait(d, "document.querySelector('.pane')?.dataset.done", what="the run's end")
        state = pane_state(d)
        assert state["done"] == "failed" and "limit of 2 s" in state["error"]
        assert state["cards"] == ["done", "cancelled"]
        label = d.execute_script("return document.querySelector('.answer .fallback')?.textContent")
        assert label and label.startswith("Incomplete answer")
        assert "slow answer" in d.execute_script(
            "return document.querySelector('.answer').textContent"
        )
        assert [role for role, _ in ax_names(d, {"alert"})] == ["alert"]
        assert not d.execute_script("return !!document.querySelector('[aria-busy]')")
        # Reopened from the history, the old run's error shows but is no alert (it was read
        # out again as if it had just failed), and nothing in it is left busy.
        wait(d, "document.querySelector('.h-open')", what="the history")
        d.execute_script("document.querySelector('.pane').dataset.live = 'yes'")
        d.find_element("css selector", ".h-open").click()
        wait(d, "document.querySelector('.pane:not([data-live])')?.dataset.done", what="reopening")
        assert "limit of 2 s" in pane_state(d)["error"]
        assert ax_names(d, {"alert"}) == []
        assert not d.execute_script("return !!document.querySelector('[aria-busy]')")


def test_agreement_marks_are_keyboard_reachable_and_right_after_emoji(backend, browser, tmp_path):
    """'show' of a card's agreement is a button (Tab, Enter), and the marked spans are the
    shared words even when the answer starts with characters outside the BMP."""
    from selenium.webdriver.common.keys import Keys

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(
        proposers=[f"ref@{backend.url}"], aggregator=f"emoji@{backend.url}", layers=2
    )
    with BackgroundServer(create_app({"emoji": config})) as server:
        d = browser
        start(d, server.root, "emoji")
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        show = d.find_element("css selector", ".card .overlap button")
        assert show.tag_name == "button" and "% of the answer shared" in show.text
        show.send_keys(Keys.ENTER)
        marks = wait(
            d,
            "[...document.querySelectorAll('.answer mark')].map(m => m.textContent)",
            what="marks",
        )
        assert marks == ["the sky is blue because of scattering"]


def test_right_to_left_text_reads_right_to_left(backend, browser, tmp_path):
    """An Arabic question, proposal and answer each take their own direction. The question's
    box and a vote's tally showed Arabic left to right (the box typed it so, the tally's
    answer cell took the page's direction); both now follow the text, the tally's answer
    isolated from the English words around it."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"rtl@{backend.url}"], aggregator=f"rtl@{backend.url}", layers=2)
    vote = MoAConfig(
        variant="select", proposers=[f"rtl@{backend.url}"] * 2, selection={"method": "vote"}
    )
    with BackgroundServer(create_app({"rtl": config, "rtl-vote": vote})) as server:
        d = browser
        rtl = "s => document.querySelector(s).matches(':dir(rtl)')"
        start(d, server.root, "rtl", RTL)
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        directions = d.execute_script(
            f"return ['#question', '.pane-question', '.card .text', '.answer p'].map({rtl})"
        )
        assert directions == [True, True, True, True]
        start(d, server.root, "rtl-vote", RTL)
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the vote")
        cell = "document.querySelector('.tally tr.picked td')"
        assert d.execute_script(f"return {cell}.textContent") == RTL + " (picked)"
        assert d.execute_script(
            f"return [({rtl})('.tally tr.picked td > *'), {cell}.matches(':dir(ltr)')]"
        ) == [True, True]
        # "Picked because '...' has 2 of 2 votes": the quoted answer was bare text inside the
        # English sentence, so the Arabic reordered the words around it.
        reason = d.execute_script("return document.querySelector('.tally .reason').textContent")
        assert reason == f"Picked because '{RTL}' has 2 of 2 votes from 2 of 2 proposals"
        assert d.execute_script(
            "return [...document.querySelectorAll('.tally .reason bdi')].map(b => b.textContent)"
        ) == [f"'{RTL}'"]
        assert d.execute_script(f"return ({rtl})('.tally .reason bdi')")


def test_the_key_is_entered_with_the_keyboard_alone(backend, browser):
    """Typing the key and pressing Enter uses it, as in any form; it is sent as a header,
    never put in the page's address or its document."""
    from selenium.webdriver.common.keys import Keys

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(variant="select", proposers=[f"v42@{backend.url}", f"v41@{backend.url}"])
    with BackgroundServer(create_app({"keyed": config}, api_key="sekret")) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "!document.getElementById('key-box').hidden", what="the key prompt")
        d.find_element("id", "api-key").send_keys("sekret" + Keys.ENTER)
        wait(d, "document.querySelectorAll('#preset option').length === 1", what="the models")
        assert d.execute_script("return document.getElementById('key-box').hidden")
        assert "sekret" not in d.current_url and "sekret" not in d.page_source


WATCH_UPDATES = """
window.frames_seen = 0;
(function tick() { window.frames_seen += 1; requestAnimationFrame(tick); })();
window.updates = {answer: 0, card: 0};
new MutationObserver((records) => {
  for (const r of records) {
    const node = r.target.nodeType === Node.ELEMENT_NODE ? r.target : r.target.parentElement;
    if (node?.closest('.answer')) window.updates.answer += 1;
    else if (node?.closest('.card .text')) window.updates.card += 1;
  }
}).observe(document.getElementById('panes'), {childList: true, characterData: true, subtree: true});
"""
"""Counts the browser's frames, and the changes made to the answer and to the cards' texts."""


def test_a_long_answer_is_drawn_once_a_frame_and_ends_exact(backend, browser, tmp_path):
    """5,000 tokens come faster than frames: the page adds what came once a frame (rewriting
    the whole answer on every token took time quadratic in its length), and the card and
    the answer end with exactly the text the model wrote."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"long@{backend.url}", layers=2)
    with BackgroundServer(create_app({"long": config})) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 1")
        d.execute_script(WATCH_UPDATES)
        d.find_element("id", "question").send_keys("Write at length.")
        d.find_element("id", "ask-button").click()
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", 120, "the run")
        written = card(d, "aggregator:2:-1:0")["text"]
        words = written.split(" ")
        assert words[:2] == ["long", "answer"] and len(words) == LONG_WORDS
        assert words[3:] == [f"w{i}" for i in range(LONG_WORDS - 3)]
        assert d.execute_script("return document.querySelector('.answer').textContent") == written
        frames, updates = d.execute_script("return [window.frames_seen, window.updates]")
        # One change a frame, and a few for the events around the tokens (a card's start,
        # the answer's formatting): never one per token.
        assert updates["answer"] <= frames + 10, (updates, frames)
        assert updates["card"] <= frames + 10, (updates, frames)


def test_a_run_with_a_layer_passed_over_is_marked_degraded(browser, tmp_path):
    """Every proposal of layer 2 fails: the page marked the run done, unlike a fallback."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer
    from tests.fakes import FakeChat

    def second_call_fails(n, messages):
        return ValueError("model exploded") if n == 2 else None

    config = MoAConfig(
        proposers=[FakeChat(label="A", fail=second_call_fails)],
        aggregator=FakeChat(label="AGG"),
        layers=3,
        retry={"max_attempts": 1},
    )
    app = create_app({"po": config}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        ask_the_only_preset(d, server.root, "Passed over?")
        assert d.execute_script("return document.querySelector('.pane').dataset.done") == (
            "degraded"
        )
        label = d.execute_script("return document.querySelector('.answer .fallback').textContent")
        assert label.startswith("Degraded answer: every proposal of layer 2 failed")


def test_a_run_the_history_could_not_keep_says_so_in_its_pane(backend, browser, tmp_path):
    """The server answered the run but could not save it ('done' says "kept": false): the
    pane said only 'done', and the run was then missing from the history for no reason
    shown. The pane now says it was not kept."""
    import sqlite3

    from langgraph_moa import MoAConfig
    from langgraph_moa.config import RequestLimits
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"v41@{backend.url}", layers=2)
    slow = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"slow@{backend.url}", layers=2)
    history = History(tmp_path / "h.db")
    with sqlite3.connect(history.path) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON runs "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    limits = RequestLimits(request_timeout_s=2)
    app = create_app({"fast": config, "slow": slow}, history=history, limits=limits)
    with BackgroundServer(app) as server:
        d = browser
        start(d, server.root, "fast")
        wait(d, "document.querySelector('.pane').dataset.done", what="the run's end")
        state = pane_state(d)
        assert state["done"] == "done" and "done" in state["status"]
        note = d.execute_script("return document.querySelector('.pane .not-kept')?.textContent")
        assert note and "not keep" in note and "history" in note
        # A failed run not kept: the note went into the error's alert, so the error was read
        # out a second time with it; the note is a status of its own beside the alert.
        start(d, server.root, "slow")
        wait(d, "document.querySelector('.pane').dataset.done", what="the failed run's end")
        said = d.execute_script(
            """const p = document.querySelector('.pane'), note = p.querySelector('.not-kept');
            return [p.querySelector('[role=alert]').textContent, note.textContent,
              note.closest('[role=alert]') === null, note.parentNode.getAttribute('role')];"""
        )
        assert "limit of 2 s" in said[0] and "not keep" not in said[0], said
        assert "not keep" in said[1] and said[2:] == [True, "status"], said


def test_a_server_that_keeps_no_history_says_so_under_history(backend, browser):
    """With --history-runs 0 (or a file it could not open) the server keeps no runs, and
    ``GET /v1/moa/runs`` says ``"history": false``: the page showed an empty list with no
    word, the same as a history with no run yet, and every run vanished from it unsaid."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"v41@{backend.url}", layers=2)
    with BackgroundServer(create_app({"fast": config}, history=None)) as server:
        start(browser, server.root, "fast")
        note = wait(
            browser,
            "document.getElementById('history-off')?.hidden === false"
            " && document.getElementById('history-off').textContent",
            what="the note that no history is kept",
        )
        assert "no history" in note, note
        wait(browser, "document.querySelector('.pane').dataset.done", what="the run's end")
        assert (
            browser.execute_script("return document.querySelectorAll('.history-item').length") == 0
        )


def test_a_history_with_no_run_yet_says_nothing_of_history_off(served, browser):
    browser.get(f"{served}/ui")
    wait(browser, "document.querySelectorAll('#preset option').length", what="the models")
    wait(browser, "document.getElementById('history-off')", what="the page")
    assert browser.execute_script("return document.getElementById('history-off').hidden")


UNBROKEN = "https://example.com/" + "a" * 400
"""A URL with no break opportunity: it must wrap inside its card, not widen the page."""


def ax_names(driver, roles: set[str]) -> list[tuple[str, str]]:
    """(role, accessible name) of every node of `roles` in Chromium's accessibility tree."""
    nodes = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    found = []
    for node in nodes:
        role = node.get("role", {}).get("value")
        if role in roles and not node.get("ignored"):
            found.append((role, node.get("name", {}).get("value", "")))
    return found


def test_a_phone_wide_screen_stacks_twelve_proposers_and_never_scrolls_sideways(backend, browser):
    """At 360 px the history took 240 px beside the runs, two runs stood side by side, and
    the models box's 50-character field and long unbroken words (a URL in an answer, in the
    question) made the page wider than the screen. Now everything stacks and wraps; nothing
    the page does logs a console error (a missing favicon was one)."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    profiles = {"wide": FaultProfile(reply_text=f"see {UNBROKEN} " * 3)}
    with FaultServer(profiles) as wide:
        proposers = [f"wide@{wide.url}"] * 12
        config = MoAConfig(proposers=proposers, aggregator=f"wide@{wide.url}", layers=2)
        with BackgroundServer(create_app({"wide": config})) as server:
            d = browser
            d.set_window_size(360, 800)
            start(d, server.root, "wide", "Why " + "y" * 300 + "?")
            wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
            d.find_element("css selector", ".reask-button").click()
            wait(d, "document.querySelectorAll('.pane[data-done=done]').length === 2", what="both")
            d.execute_script("document.getElementById('models-box').open = true")
            assert d.execute_script("return document.querySelectorAll('.pane .card').length") == 26
            width = d.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert width[0] <= width[1], width
            stacked = d.execute_script(
                """const [a, b] = [...document.querySelectorAll('.pane')].map(p => p.getBoundingClientRect());
                const h = document.getElementById('history').getBoundingClientRect();
                const m = document.getElementById('panes').getBoundingClientRect();
                return b.top >= a.bottom && (m.top >= h.bottom || h.top >= m.bottom);"""
            )
            assert stacked
            assert console_errors(d) == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            d.save_screenshot(str(ARTIFACTS / "7-narrow-screen.png"))  # at 360 px


def test_a_screen_reader_hears_each_run_s_state_not_its_tokens(backend, browser, tmp_path):
    """Every control the page draws has a name (the re-ask's model list had none); each run's
    title is a heading under the page's; its state line is a polite status that says
    'running', then how the run ended, while the streaming cards and answer are not live.
    A card and the answer still being written were not said to be (they are aria-busy until
    their call ends), and a run's error was only a red line that nothing read out (the state
    said 'failed', not why): it is an alert."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    with BackgroundServer(create_app({"m": config})) as server:
        d = browser
        start(d, server.root, "m")
        busy = wait(
            d,
            """(p => p && !p.dataset.done && p.querySelector('.answer').textContent &&
              [...p.querySelectorAll('.card, .answer')].map(n =>
                [n.dataset.status || 'answer', n.getAttribute('aria-busy')])
            )(document.querySelector('.pane'))""",
            what="the answer streaming",
        )
        assert busy == [["done", None], ["running", "true"], ["answer", "true"]], busy
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        assert not d.execute_script("return !!document.querySelector('[aria-busy]')")
        unnamed = [n for n in ax_names(d, {"button", "combobox", "textbox"}) if not n[1].strip()]
        assert unnamed == []
        headings = d.execute_script(
            """return [...document.querySelectorAll('h1, h2, h3, [role=heading]')].map(h =>
              Number(h.getAttribute('aria-level') || h.tagName.slice(1)));"""
        )
        assert headings[0] == 1 and all(b - a <= 1 for a, b in itertools.pairwise(headings))
        assert ("heading", "m") in ax_names(d, {"heading"})  # the run's title
        # The history and each run are landmarks with names (one keystroke jumps between
        # runs side by side); they were a nameless complementary and plain sections.
        landmarks = ax_names(d, {"banner", "complementary", "main", "region"})
        assert ("complementary", "History") in landmarks and ("region", "m") in landmarks
        live = d.execute_script(
            """return [...document.querySelectorAll('.pane [role=status], .pane [aria-live]')]
              .map(n => [n.className, n.getAttribute('aria-live') || 'polite', n.textContent]);"""
        )
        assert [(c, p) for c, p, _ in live] == [("pane-status", "polite"), ("pane-note", "polite")]
        assert live[0][2].endswith("done") and live[1][2] == ""  # the note: a run not kept
        assert not d.execute_script(
            "return !!document.querySelector('.card [aria-live], .answer[aria-live]')"
        )
        assert console_errors(d) == []

    d.find_element("id", "ask-button").click()  # the server is gone
    error = wait(d, "document.querySelector('.pane-error')?.textContent", what="the error")
    assert [role for role, _ in ax_names(d, {"alert"})] == ["alert"]
    assert d.execute_script("return document.querySelector('[role=alert]').textContent") == error


def focused(driver) -> str:
    """Where the keyboard's focus is: a short description of the active element."""
    return driver.execute_script(
        """const a = document.activeElement;
        if (!a || a === document.body) return 'body';
        return a.tagName.toLowerCase() + '.' + a.className + (a.closest('#history-list') ? ' in history' : '');"""
    )


def test_the_keyboard_alone_asks_and_focus_never_falls_back_to_the_page_top(
    backend, browser, tmp_path
):
    """Ctrl+Enter in the question asks it (Enter writes a new line). A control that goes away
    under the keyboard's focus ('show formatted', the re-ask of a pane pushed out, a history
    button redrawn when a run ends) dropped the focus to <body>, so the next Tab started from
    the top of the page; the focus now goes to the control's successor."""
    from selenium.webdriver.common.keys import Keys

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(
        proposers=[f"ref@{backend.url}"], aggregator=f"emoji@{backend.url}", layers=2
    )
    app = create_app({"emoji": config}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 1", what="the model")
        d.find_element("id", "question").send_keys("Why blue?" + Keys.CONTROL + Keys.ENTER)
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        assert d.find_element("id", "question").get_attribute("value") == "Why blue?"

        d.find_element("css selector", ".card .overlap button").send_keys(Keys.ENTER)
        back = d.find_element("css selector", ".answer button")
        back.send_keys(Keys.ENTER)
        assert focused(d) == "button.show-overlap"

        d.find_element("css selector", ".reask-button").send_keys(Keys.ENTER)
        wait(d, "document.querySelectorAll('.pane[data-done=done]').length === 2", what="2 runs")
        d.find_element("css selector", ".pane:first-child .reask-button").send_keys(Keys.ENTER)
        assert focused(d) == "span.pane-title"  # the new run's, the old pane is gone
        wait(d, "document.querySelectorAll('.pane[data-done=done]').length === 2", what="2 runs")

        wait(d, "document.querySelectorAll('#history-list li').length === 3", what="history")
        d.execute_script(
            """document.querySelector('.h-open').focus();
            document.getElementById('ask').requestSubmit();"""
        )
        wait(d, "document.querySelectorAll('#history-list li').length === 4", what="4 runs")
        assert focused(d) == "button.h-open in history"
        assert console_errors(d) == []


def test_the_pick_is_said_in_words_not_only_by_a_coloured_outline(backend, browser):
    """The picked card was marked only by a green outline (beside the coloured rings of the
    cards that agree) and the tally's picked row by weight and a tint: nothing a screen
    reader or a colour-blind reader could tell apart. Both now say 'picked'."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    url = backend.url
    config = MoAConfig(
        variant="select",
        proposers=[f"v42@{url}", f"v42@{url}", f"v41@{url}"],
        selection={"method": "vote"},
    )
    with BackgroundServer(create_app({"vote": config})) as server:
        d = browser
        start(d, server.root, "vote")
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        said = d.execute_script(
            """return [...document.querySelectorAll('.card')].map(c =>
              [c.classList.contains('winner'), c.querySelector('.status').textContent]);"""
        )
        assert [w for w, _ in said].count(True) == 1
        assert all(("picked" in status) == winner for winner, status in said), said
        rows = d.execute_script(
            "return [...document.querySelectorAll('.tally tr')].slice(1).map(r => r.textContent)"
        )
        assert [("picked" in r) for r in rows] == [True, False], rows
        # Under forced colours (Windows high contrast) the agreement rings, a box-shadow,
        # vanished: the agreeing cards are outlined there, and each names whom it agrees with.
        d.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "forced-colors", "value": "active"}]},
        )
        marks = d.execute_script(
            """return [...document.querySelectorAll('.card')].map(c => [c.dataset.key,
              getComputedStyle(c).outlineStyle, c.querySelector('.overlap').textContent]);"""
        )
        assert [(style != "none", text) for _, style, text in marks] == [
            (True, "agrees with proposer 2"),
            (True, "agrees with proposer 1"),
            (False, ""),
        ], marks


def test_a_server_that_went_away_is_named_in_a_sentence(backend, browser):
    """Asking after the server stopped showed the browser's bare 'Failed to fetch' in the
    run's pane. It now says that the server could not be reached and what to do."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    server = BackgroundServer(create_app({"m": config}))
    with server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 1", what="the model")
    d.find_element("id", "question").send_keys("Anyone there?")
    d.find_element("id", "ask-button").click()
    error = wait(d, "document.querySelector('.pane-error')?.textContent", what="the error")
    assert error.startswith("The server could not be reached"), error
    assert "moa serve" in error and error.count(".") == 1, error
    assert d.execute_script("return document.querySelector('.pane-status').textContent") == "failed"


def test_each_history_button_is_named_with_its_runs_question(backend, browser, tmp_path):
    """Every history item's buttons read 'open' and 'side by side' to a screen reader, so a
    list of runs was a column of identical buttons; each now names its run's question (a
    long one cut), its visible word first (WCAG 2.5.3, label in name)."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    app = create_app({"m": config}, history=History(tmp_path / "h.db"))
    long = "Why " + "very " * 40 + "blue?"
    with BackgroundServer(app) as server:
        d = browser
        for question in ("Why is the sky blue?", long):
            start(d, server.root, "m", question)
            wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        wait(d, "document.querySelectorAll('#history-list li').length === 2", what="history")
        shown = d.execute_script(
            "return [...document.querySelectorAll('#history-list button')].map(b => b.textContent)"
        )
        assert shown == ["open", "side by side"] * 2
        names = [
            name for role, name in ax_names(d, {"button"}) if name.startswith(("open", "side"))
        ]
        assert len(set(names)) == 4, names
        assert "open: Why is the sky blue?" in names
        assert "side by side: Why is the sky blue?" in names
        cut = [n for n in names if "very" in n]
        assert len(cut) == 2 and all(len(n) < 140 and n.endswith("…") for n in cut), cut
        # Each name made an Intl.Segmenter of its own and split the whole question, on every
        # drawing of the list: one is made with the page, and a short question is not split.
        made = d.execute_async_script(
            """const done = arguments[arguments.length - 1];
            const Made = Intl.Segmenter;
            let count = 0;
            Intl.Segmenter = class extends Made { constructor(...a) { super(...a); count++; } };
            loadHistory().then(() => { Intl.Segmenter = Made; done(count); });"""
        )
        assert made == 0


def test_ctrl_enter_asks_from_the_other_models_fields_too(backend, browser):
    """Ctrl+Enter asked only from the question: in the Proposers or Aggregator field, the
    field a user fills last before asking, it did nothing."""
    from selenium.webdriver.common.keys import Keys

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2)
    with BackgroundServer(create_app({"m": config})) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 1", what="the model")
        d.find_element("id", "question").send_keys("Why blue?")
        d.execute_script("document.getElementById('models-box').open = true")
        for field in ("proposers", "aggregator"):
            before = d.execute_script("return document.querySelector('.pane')?.dataset.runId")
            d.find_element("id", field).send_keys(Keys.CONTROL + Keys.ENTER)
            wait(
                d,
                f"""(p => !!p && !!p.dataset.runId && p.dataset.runId !== '{before}'
                  && p.dataset.done === 'done')(document.querySelector('.pane'))""",
                what=f"a run asked from the {field} field",
            )
        assert console_errors(d) == []


def test_a_failed_or_refused_run_shows_its_request_id(backend, browser):
    """The crash sentence tells the user the operator's log names the request, yet the page
    never showed which: a run's error event and a refused run's body carry its ID, and the
    pane's error now ends with it."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(
        proposers=[f"broken@{backend.url}"],
        aggregator=f"broken@{backend.url}",
        retry={"max_attempts": 1},
    )
    shown = r"\(request [0-9a-f]{32}\)$"
    with BackgroundServer(create_app({"b": config})) as server:
        d = browser
        start(d, server.root, "b")
        error = wait(d, "document.querySelector('.pane-error')?.textContent", what="the error")
        assert re.search(shown, error), error
        d.find_element("css selector", "#models-box summary").click()
        d.find_element("id", "proposers").send_keys("openai:gpt-4o")  # refused: not enabled
        d.find_element("id", "ask-button").click()
        refused = "document.querySelector('.pane-error')?.textContent.includes('not enabled')"
        wait(d, refused, what="the refusal")
        error = d.execute_script("return document.querySelector('.pane-error').textContent")
        assert re.search(shown, error), error


WATCH_ANSWER = """
window.answer_texts = [];
new MutationObserver((records) => {
  for (const r of records) {
    const node = r.target.nodeType === Node.ELEMENT_NODE ? r.target : r.target.parentElement;
    if (!node?.closest('.answer')) continue;
    if (r.type === 'characterData') window.answer_texts.push(r.target.data);
    for (const added of r.addedNodes) window.answer_texts.push(added.textContent);
  }
}).observe(document.getElementById('panes'), {childList: true, characterData: true, subtree: true});
"""
"""Keeps every text ever put into an answer box, however briefly it showed."""


def test_the_answer_box_never_shows_the_aggregator_s_thinking(backend, browser):
    """A reasoning aggregator writes <think>...</think> before its answer, and its answer's
    tokens carry it: the answer box shows only the answer as it streams (the thinking showed
    there until the whole answer replaced it), while the aggregator's card shows it at work."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"thinker@{backend.url}")
    with BackgroundServer(create_app({"think": config})) as server:
        d = browser
        d.get(f"{server.root}/ui")
        wait(d, "document.querySelectorAll('#preset option').length === 1", what="the model")
        d.execute_script(WATCH_ANSWER)
        d.find_element("id", "question").send_keys("What is seven times two?")
        d.find_element("id", "ask-button").click()
        states, deadline = [], time.monotonic() + 60
        while True:
            state = d.execute_script(
                """const p = document.querySelector('.pane');
                const c = p && p.querySelector('.card[data-role="aggregator"]');
                return p && {done: p.dataset.done || null, answer: p.querySelector('.answer')
                  .textContent, card: c && c.querySelector('.text').textContent,
                  running: !!c && c.dataset.status === 'running'};"""
            )
            if state:
                states.append(state)
                if state["done"]:
                    break
            assert time.monotonic() < deadline, f"the run did not end: {states[-1:]}"
            time.sleep(0.05)
        assert states[-1]["done"] == "done", states[-1]
        # The stream was seen while the aggregator thought, and while it answered.
        assert any(s["running"] and "Maybe" in (s["card"] or "") for s in states), states
        assert any(s["running"] and "Seven" in s["answer"] for s in states), states
        for shown in [s["answer"] for s in states] + d.execute_script("return answer_texts"):
            assert "think>" not in shown and "Maybe" not in shown, shown
        assert states[-1]["answer"] == "Seven times two makes 14: two sevens are fourteen."
        assert THOUGHT in states[-1]["card"], states[-1]["card"]  # the card shows it at work


def test_the_page_drops_thinking_by_the_package_s_rule(served, browser):
    """The page's cut of a streamed answer gives out what the package's ThinkingCut does,
    piece by piece: held prefixes of <think>, a block only where it opens the text (after
    Python's whitespace), the whitespace after </think> dropped, a tag split anywhere."""
    texts = [
        "<think>a draft</think>  the answer",
        " \n<think>x\n</think>\n\nThe answer",
        "<think>never closed",
        "<th",
        "<thinking> is a tag",
        "the answer <think>x</think>",
        "   ",
        "<think></think>answer",
        "\x1c\x85<think>t</think>\u3000ans",
        "\ufeff<think>t</think>a",
        "<think>a </thi </think> b \U0001f600",
        "x<think>",
    ]
    cases = [list(t) for t in texts] + [[t[i : i + 3] for i in range(0, len(t), 3)] for t in texts]
    cases += [[t] for t in texts]

    def cut(pieces: list[str]) -> list[str]:
        thinking = ThinkingCut()
        return [thinking.take(p) for p in pieces] + [thinking.finish()]

    browser.get(f"{served}/ui")
    page = browser.execute_script(
        """return arguments[0].map((pieces) => {
          const thinking = new ThinkingCut();
          return pieces.map((p) => thinking.take(p)).concat([thinking.finish()]);
        });""",
        cases,
    )
    assert page == [cut(pieces) for pieces in cases]


def test_the_page_cuts_each_chunk_wise_part_s_thinking_as_the_package_does(served, browser):
    """The page's answer cut started afresh only at a new call or its retry: from part 2 of
    a reasoning aggregator's chunk-wise answer it typed out the part's <think> block. It
    now types what the package's stream sends (OneAttempt: a cut per part, what a part's cut
    held going out before the next part's text)."""
    from langgraph_moa.graph.streaming import OneAttempt

    parts = [
        [(1, "<think>a</think>One. "), (2, "<think>b</think>"), (2, "Two.")],
        [(1, "\n\n"), (2, "Hi")],
        [(1, "<th"), (2, "<think>x</think>Hi")],
    ]
    cases = parts + [[(n, c) for n, text in case for c in text] for case in parts]

    def sent(pieces: list[tuple[int, str]]) -> str:
        one, out = OneAttempt(), ""
        for part, text in pieces:
            one.check(f"m{part}", part)
            out += one.sent(one.answer_text(text))
        return out + one.sent(one.held_text())

    browser.get(f"{served}/ui")
    page = browser.execute_script(
        """return arguments[0].map((pieces) => {
          const call = {role: "aggregator", layer: 2, proposer: -1, sample: 0};
          const pane = new Pane(() => {});
          pane.apply({...call, event: "started", configured_model: "agg"});
          for (const [part, text] of pieces) {
            pane.apply({...call, event: "token", text: text, final: true, part: part});
          }
          return pane.answerText + pane.thinking.finish();
        });""",
        cases,
    )
    assert page == [sent(pieces) for pieces in cases]


def test_a_right_to_left_model_name_keeps_its_place_in_the_history_line(backend, browser, tmp_path):
    """A system named in Arabic, with a digit ("...-2"), in the history's "name · status ·
    date" line: the name was bare text in the English line, so its digits and the dots
    after it joined the Arabic run and read in the wrong order. It is isolated now, in
    its own direction, and so is the pane's title."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    name = "\u0645\u0633\u0627\u0639\u062f-2"
    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}")
    app = create_app({name: config}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        start(d, server.root, name)
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        wait(d, "document.querySelectorAll('#history-list li').length === 1", what="history")
        isolated = d.execute_script(
            "const b = document.querySelector('#history-list .h-meta bdi');"
            "return b && [b.textContent, b.matches(':dir(rtl)')]"
        )
        assert isolated == [name, True]
        assert d.execute_script("return document.querySelector('.pane-title').matches(':dir(rtl)')")


def test_a_history_button_s_name_cuts_a_long_question_between_whole_characters(
    backend, browser, tmp_path
):
    """A question's name for a screen reader was cut at 99 UTF-16 units: an emoji there
    lost its second half (a lone surrogate, read as noise) or a family its last members.
    It is cut between whole characters as drawn."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._history import History
    from langgraph_moa.testing import BackgroundServer

    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    config = MoAConfig(proposers=[f"v42@{backend.url}"], aggregator=f"agg@{backend.url}")
    app = create_app({"m": config}, history=History(tmp_path / "h.db"))
    with BackgroundServer(app) as server:
        d = browser
        start(d, server.root, "m", "x" * 97 + family + " and more words")
        wait(d, "document.querySelector('.pane')?.dataset.done === 'done'", what="the run")
        wait(d, "document.querySelectorAll('#history-list li').length === 1", what="history")
        label = d.execute_script(
            "return document.querySelector('#history-list .h-open').getAttribute('aria-label')"
        )
        assert label == "open: " + "x" * 97 + family + "\u2026", ascii(label[-12:])
