"""The package's own work per model call (issue 23: a model call's own work is budgeted).

Each test counts, with cProfile (the same count on every run), work that a plain run, one
that answers with no call cache, no cut-off and no reader, does not need: guards that only
a failure, a cache or a reader reads ran on every call, and the graph's function calls per
model call crept up by about 30 in a day (`benchmarks/graph_call_work.py`).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats

from langgraph_moa import MoAConfig, create_moa_graph


def profiled_run(fake) -> pstats.Stats:
    """Profile a second async run (the first builds and caches the models) of 2 x 2 MoA."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config)
    question = {"messages": [("user", "Explain X")]}
    asyncio.run(graph.ainvoke(question))
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(graph.ainvoke(question))
    profiler.disable()
    return pstats.Stats(profiler)


def calls_from(stats: pstats.Stats, callee: str, caller_file: str) -> int:
    """How often functions named `callee` were called from frames of `caller_file`."""
    total = 0
    for (_file, _line, name), (_cc, _nc, _tt, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if callee in name:
            total += sum(n for (file, _, _), (n, *_rest) in callers.items() if caller_file in file)
    return total


def test_a_run_without_a_call_cache_never_looks_for_cut_off_thinking(fake):
    """Whether a model was cut off while thinking decides only whether the call cache keeps
    its answer; with no cache it was still worked out for every answer (its text split for
    a ``<think>`` block), about ten function calls per model call."""
    stats = profiled_run(fake)
    assert calls_from(stats, "cut_while_thinking", "langgraph_moa/run/_calls.py") == 0


def test_a_node_that_answers_enters_no_context_manager(fake):
    """The guard that forgets a run's ledger step when the run ends in a node (cut off, or
    failed for good) was a `contextlib.contextmanager`, entered and left by every proposer
    and aggregator node that answered: about nine function calls per model call."""
    stats = profiled_run(fake)
    assert calls_from(stats, "__enter__", "langgraph_moa/graph/_nodes.py") == 0
    assert calls_from(stats, "helper", "langgraph_moa/graph/_nodes.py") == 0


def test_a_model_call_sets_one_context_variable_for_its_clocks(fake):
    """The call's timeout scope and where its reader's holds are noted travel together: two
    context variables cost every model call a set and a reset more than one."""
    stats = profiled_run(fake)
    model_calls = 2 + 1  # the first layer's two proposers, then the aggregator
    sets = calls_from(stats, "method 'set' of '_contextvars.ContextVar'", "langgraph_moa/run")
    assert sets == model_calls


def test_the_thinking_check_of_a_plain_answer_makes_three_calls():
    """Every answer is checked for a leading ``<think>`` block; one without the tag went
    through LangChain's text accessor and was stripped and compared (eight calls, every
    model call), where a string's `in` tells it in none: the check and its two isinstance."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.run._accounting import without_thinking

    answer = AIMessage("  The sky is blue: air scatters short wavelengths more. 1 < 2.")
    without_thinking(answer, "m")
    profiler = cProfile.Profile()
    profiler.enable()
    kept = without_thinking(answer, "m")
    profiler.disable()
    assert kept is answer
    made = pstats.Stats(profiler).total_calls - 1  # type: ignore[attr-defined]  # less disable
    assert made <= 3


def test_a_call_record_and_its_event_make_the_call_identity_once(monkeypatch):
    """A call's record and its ``finished`` (or ``failed``) event carry the same identity
    fields: made twice, a dict of them cost every model call three function calls more."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.run import _calls
    from langgraph_moa.run._calls import CallId, record_answer, record_failure

    made = []
    fields = CallId.fields

    def counted(call):
        made.append(call)
        return fields(call)

    monkeypatch.setattr(CallId, "fields", counted)
    monkeypatch.setattr(_calls, "emit", lambda event, *_, **__: None)  # outside a run
    call = CallId("proposer", 0, 1, 0, "m")
    record = record_answer(call, [], AIMessage("An answer."), 0.1)
    assert (record["proposer"], len(made)) == (1, 1)
    record = record_failure(call, ["e"], RuntimeError("e"), 0.1)
    assert (record["proposer"], len(made)) == (1, 2)


def made_by(stats: pstats.Stats, callee: str, caller_file: str, caller: str) -> int:
    """How often functions named `callee` were called by function `caller` of `caller_file`."""
    total = 0
    for (_file, _line, name), (_cc, _nc, _tt, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if callee in name:
            total += sum(
                n
                for (file, _, by), (n, *_rest) in callers.items()
                if caller_file in file and by == caller
            )
    return total


def profiled(call) -> pstats.Stats:
    """Profile one call of `call` (after one unprofiled, which warms any cache)."""
    call()
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    return pstats.Stats(profiler)


def test_a_text_answer_is_not_counted_for_tool_calls(fake):
    """The bound on an answer's tool calls (`check_call_bounds`) counted every answer's, a
    text answer's none too: four function calls per model call for a count of zero."""
    stats = profiled_run(fake)
    assert calls_from(stats, "check_call_bounds", "langgraph_moa/run/_options.py") == 0


def test_a_clip_between_two_ascii_characters_looks_no_further():
    """Every finished event's preview is its answer clipped at 200 characters between whole
    characters (`boundary`): a cut between two ASCII characters, which never join, still
    looked each up as a mark, a joiner and half a flag, seven function calls a model call."""
    from langgraph_moa._unicode import boundary

    line = "The sky is blue because air scatters short wavelengths more. " * 8
    stats = profiled(lambda: boundary(line, 200))
    assert boundary(line, 200) == 200
    assert stats.total_calls - 2 <= 3  # type: ignore[attr-defined]  # less the lambda, disable


def test_a_run_reads_the_provider_table_with_no_function_call(fake):
    """The finish-reason and model-name keys are read from the provider table on every
    model call: through a function each, three calls a model call for two attributes."""
    stats = profiled_run(fake)
    assert calls_from(stats, "_keys", "langgraph_moa/run/_accounting.py") == 0


def test_the_record_of_a_text_answer_looks_up_no_mark_it_does_not_carry():
    """A call's record looked for tool calls, logprobs and `check_tool_calls`'s marks with a
    function call each (a lookup, a list made, a check), where a text answer has none."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.run._accounting import ok_record
    from langgraph_moa.run._calls import CallId

    answer = AIMessage(
        "The sky is blue.",
        response_metadata={"finish_reason": "stop", "model_name": "m"},
        usage_metadata={"input_tokens": 6, "output_tokens": 5, "total_tokens": 11},
    )

    def record():
        return ok_record(
            **CallId("proposer", 0, 0, 0, "m").fields(), response=answer, latency_s=0.1
        )

    stats = profiled(record)
    assert (record()["model"], record()["finish_reason"], "tool_calls" in record()) == (
        "m",
        "stop",
        False,
    )
    accounting = "langgraph_moa/run/_accounting.py"
    assert made_by(stats, "tool_calls_of", accounting, "ok_record") == 0
    assert made_by(stats, "'get' of 'dict'", accounting, "ok_record") == 0
    assert made_by(stats, "isinstance", accounting, "token_logprobs") == 0
    assert made_by(stats, "'get' of 'dict'", accounting, "finish_reason") == 0
    assert made_by(stats, "'get' of 'dict'", accounting, "answering_model") == 0


def test_an_event_of_a_run_with_no_tally_and_no_discard_reader_looks_up_neither(fake):
    """Every started and finished event looked up the run's call tally and whether its
    reader wants discards alone, with a lookup and a check each: six calls a model call."""
    stats = profiled_run(fake)
    calls = "langgraph_moa/run/_calls.py"
    assert made_by(stats, "'get' of 'dict'", calls, "emit") == 0
    assert made_by(stats, "isinstance", calls, "emit") == 0
    nodes = "langgraph_moa/graph/_nodes.py"
    assert made_by(stats, "'get' of 'dict'", nodes, "_attempt") == 0  # its bound tools


def test_whether_a_model_is_called_directly_is_told_in_one_function_call(fake):
    """Whether LangChain's functions on ``ainvoke``'s way are the model class's own is
    looked up on every call (a class may be patched at any time): a loop of nine getattr
    made ten function calls a model call."""
    stats = profiled_run(fake)
    assert calls_from(stats, "getattr", "langgraph_moa/run/_direct.py") == 0


def test_a_steps_call_records_are_merged_once():
    """A step's writes of call records (a layer's proposers, one each) were merged one by
    one, each keying, checking and copying the list; they are merged as one, the same list."""
    from langgraph_moa.run import state
    from langgraph_moa.run.state import merge_call_writes

    def record(proposer):
        return {"role": "proposer", "layer": 1, "proposer": proposer, "sample": 0}

    left = [record(0) | {"layer": 0}]
    writes = [[record(p)] for p in range(6)]
    stats = profiled(lambda: merge_call_writes(left, writes))
    assert merge_call_writes(left, writes) == [*left, *(w[0] for w in writes)]
    assert made_by(stats, "merge_calls", "run/state.py", "merge_call_writes") == 1
    assert state.merge_call_writes(left, [*writes, None, [record(2)]]) == [record(2)]


def test_a_sync_stream_looks_at_the_interrupt_handler_once_not_per_item(monkeypatch):
    """Whether a sync run's waits make Ctrl-C raise (a notebook cell with an ``await``) was
    worked out again for every item it yielded: a handler look-up, a thread check and a loop
    look-up per token of a ``stream_mode="messages"`` stream, where it is decided once."""
    import signal

    from langgraph_moa.run._interrupt import interruptible

    looked, set_ = [], []
    getsignal, set_signal = signal.getsignal, signal.signal
    monkeypatch.setattr(signal, "getsignal", lambda s: looked.append(s) or getsignal(s))
    monkeypatch.setattr(signal, "signal", lambda s, h: set_.append(s) or set_signal(s, h))
    assert list(interruptible(iter(range(100)))) == list(range(100))
    assert (len(looked), len(set_)) == (1, 0)


def test_an_answer_with_a_thinking_block_is_split_once(monkeypatch):
    """A reasoning model's answer was split for its ``<think>`` block twice: once to tell
    whether the block closed (`cut_while_thinking`), then again to cut it out."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.run import _accounting

    splits = []
    split = _accounting.split_thinking
    monkeypatch.setattr(_accounting, "split_thinking", lambda t: splits.append(t) or split(t))
    kept = _accounting.without_thinking(AIMessage("<think>Air scatters.</think>Blue."), "m")
    assert (kept.text, kept.additional_kwargs["reasoning_content"]) == ("Blue.", "Air scatters.")
    assert len(splits) == 1


def test_an_async_run_never_asks_whether_a_model_has_a_timeout_of_its_own(fake):
    """Only a call made in a thread needs to know whether the model's client ends a call past
    its timeout (`call_model`); an async call is cancelled on its loop either way, and the
    question cost every model call about six function calls."""
    stats = profiled_run(fake)
    assert calls_from(stats, "has_own_timeout", "langgraph_moa/run") == 0
    assert calls_from(stats, "with_call_timeout", "langgraph_moa/graph") == 0


def test_an_aggregator_call_works_out_its_parameters_once(fake):
    """The aggregator's parameters (`_final_params`: its role's, the structured answer's,
    the run's options) were worked out twice per call, for the references' room and for the
    request: about seven function calls more."""
    stats = profiled_run(fake)
    assert calls_from(stats, "_final_params", "langgraph_moa/graph/_nodes.py") == 1


def test_the_schemas_of_a_call_that_sends_none_are_told_in_one_call():
    """Every call record is given the schemas its call sent (`schemas_sent`), for an estimate
    of its prompt; a plain call sends none, told by `in` alone, with no dict lookup."""
    from langgraph_moa.run._options import schemas_sent

    params = {"temperature": 0.7, "max_tokens": 512}
    profiler = cProfile.Profile()
    profiler.enable()
    sent = schemas_sent(params)
    profiler.disable()
    assert sent is None
    assert pstats.Stats(profiler).total_calls - 1 == 1  # type: ignore[attr-defined]  # less disable


def test_a_call_that_reported_its_usage_never_works_out_the_schemas_it_was_sent(fake):
    """The schemas a call sent (`schemas_sent`) are read for its record only where the
    provider reported no usage, to estimate its prompt; they were worked out for every
    answer, and twice for the aggregator's, which has them for its references' room."""
    stats = profiled_run(fake)
    assert calls_from(stats, "schemas_sent", "langgraph_moa/graph/_nodes.py") == 1
