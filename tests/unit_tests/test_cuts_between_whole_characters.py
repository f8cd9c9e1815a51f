"""User and model text shown short is cut between whole characters, never in half a flag.

A cut by code units (``text[:300]``) could end an eval's error, a fallback's reason, an
access-log field or a refusal's quote in one regional indicator (another flag, or none) or
in an emoji family's joiner.
"""

from __future__ import annotations

import time

import pytest

from langgraph_moa._unicode import beginning

FLAG = "\U0001f1eb\U0001f1f7"  # France: two regional indicators
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"


def _whole(text: str) -> bool:
    """Say whether `text` ends without half a flag or a dangling joiner."""
    run = len(text) - len(text.rstrip("".join(chr(c) for c in range(0x1F1E6, 0x1F200))))
    return run % 2 == 0 and not text.endswith("\u200d")


def _straddling(count: int) -> str:
    """Return a text whose `count`-th character is a flag's first half, then a family."""
    return "a" * (count - 1) + FLAG + " " + FAMILY


def test_beginning_keeps_a_flag_and_a_family_whole() -> None:
    assert beginning(_straddling(300), 300) == "a" * 299
    assert beginning("ab" + FAMILY, 4) == "ab"
    assert beginning("short", 300) == "short"


def test_an_eval_rows_fallback_reason_and_progress_error_end_in_whole_characters() -> None:
    from langgraph_moa.eval.runner import _fallback_words, _progress_line

    words = _fallback_words({"fallback": "direct", "fallback_reason": _straddling(300)})
    assert _whole(words), words
    row = {"id": "q1", "error": _straddling(100), "scores": {}, "calls": 0, "cached_calls": 0}
    assert FLAG[0] not in _progress_line("moa", 1, 2, row, time.perf_counter())


def test_the_first_error_in_the_report_and_the_cli_ends_in_whole_characters() -> None:
    from langgraph_moa.cli._eval import _partly_failed

    summary = {"moa": {"errors": 1, "items": 2, "first_error": _straddling(300)}}
    (line,) = _partly_failed(summary)
    assert FLAG[0] not in line, line


def test_the_report_quotes_the_first_error_in_whole_characters() -> None:
    from langgraph_moa.eval.report import render_report

    system = {"items": 2, "errors": 1, "correct": 1, "scored": 1, "accuracy": 1.0}
    system |= {"prompt_tokens": 1, "completion_tokens": 1, "calls": 1, "cached_calls": 0}
    system |= {"median_item_s": 1.0, "wall_s": 1.0, "layer_curve": {}}
    report = render_report({"moa": system | {"first_error": _straddling(300)}})
    (line,) = [line for line in report.splitlines() if "the first error" in line]
    assert FLAG[0] not in line, line


@pytest.mark.parametrize(("field", "count"), [("model", 100), ("error", 300)])
def test_an_access_log_field_ends_in_whole_characters(field: str, count: int) -> None:
    from langgraph_moa.serving._access import MODEL_KEY, AccessLog, _named

    scope = {"method": "POST", "path": "/v1/chat/completions", "client": None}
    facts: dict[str, object] = {}
    if field == "model":
        scope[MODEL_KEY] = _straddling(count)
    else:
        facts["error"] = _straddling(count)
    seen = {"request_cut": False, "request": b""}
    log = AccessLog(lambda *a: None, ["m"], lambda line: None)
    record = log._record(scope, 500, time.perf_counter(), seen, facts)
    assert _whole(record[field]), record[field]
    assert _whole(_named([_straddling(100)])[:-1])
    assert _whole(_named(["m" * 99, _straddling(200)])[:-1])


def test_a_models_refusal_of_a_schema_is_quoted_in_whole_characters() -> None:
    from langgraph_moa.run._inputs import _kind, _refusal

    assert _whole(_refusal(ValueError(_straddling(77) + " " * 10)).removesuffix("..."))
    assert _whole(_kind(_straddling(36)).removesuffix("..."))


def test_a_clip_ends_with_the_mark_asked_for_within_its_limit() -> None:
    from langgraph_moa._redact import clip

    assert clip(_straddling(38), 40, mark="...") == "a" * 37 + "..."
    assert clip("a" * 40, 40, mark="...") == "a" * 40
    assert clip(_straddling(40), 40) == "a" * 39 + "…"
    # a limit shorter than the mark: the mark alone went one character or more over it
    assert clip("abc", 0) == ""
    assert clip("abcdef", 2, mark="...") == "ab"


def test_a_refused_switch_and_count_quote_the_value_in_whole_characters(monkeypatch) -> None:
    """The refused value of a 0/1 switch was cut by code points (``value[:40]``): a flag
    across the cut was left half."""
    from langgraph_moa._env import switch_from_env
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.local.catalog import count_from_env

    for read in (lambda: switch_from_env("MOA_GC_FREEZE"), lambda: count_from_env("N", 1, 8)):
        for count in range(35, 42):
            monkeypatch.setenv("MOA_GC_FREEZE", _straddling(count))
            monkeypatch.setenv("N", _straddling(count))
            with pytest.raises(MoAConfigError) as raised:
                read()
            quoted = str(raised.value).split("got '", 1)[1].split("'", 1)[0]
            assert _whole(quoted.removesuffix("...")), quoted


@pytest.mark.timeout(60)
def test_a_texts_end_is_found_in_linear_time_where_every_cut_splits_a_character() -> None:
    """In flags joined by joiners every cut splits one character, and `ending` asked
    `boundary` at each: since a cut steps back over a joiner before a flag, each answer
    walked back to the text's start, and 100,000 characters took minutes (the live view's
    tail of a streamed answer)."""
    from langgraph_moa._unicode import ending

    half = FLAG[0]
    text = (half + half + "\u200d") * 33_334
    assert ending(text, len(text) // 2) == ""
    assert ending("a" + text, len(text) // 2) == ""
    assert ending(text + " a", 50_000) == "a"  # the space is joined to the last joiner
