"""Datasets kept in LangSmith: read them as eval items, or run `langsmith.evaluate()` on them.

Two routes, for two habits:

- `load_langsmith_dataset` turns a LangSmith dataset into `EvalItem` objects, so ``moa eval
  --langsmith-dataset NAME`` compares systems with this package's report, plots and cache.
- `evaluate_system` runs one system as the target of LangSmith's own ``evaluate()``, with
  this package's verifiable scorers as evaluators, so results land as a LangSmith
  experiment next to your other ones.

Example fields are read leniently, as LangSmith datasets are free-form: the instruction is
``inputs["instruction" | "question" | "prompt" | "input"]`` or the user turns of
``inputs["messages"]``; the expected answer is ``outputs["expected" | "answer" | "output"]``
(a string or a list), with optional ``numeric`` and ``pattern`` as in JSONL files; an
``answer`` or ``output`` that is a GSM8K worked solution (``... #### N``) gives the numeric
target N, and one whose last line opens ``####`` without a number is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from langgraph_moa._redact import redact_spec
from langgraph_moa.errors import EvalDatasetError
from langgraph_moa.eval.datasets import EvalItem, gsm8k_final_number
from langgraph_moa.eval.scorers import score
from langgraph_moa.transport._call_loop import loop_of_this_thread, run_apart

T = TypeVar("T")

_INPUT_KEYS = ("instruction", "question", "prompt", "input")
_OUTPUT_KEYS = ("expected", "answer", "output")
_SOLUTION_KEYS = ("answer", "output")  # where a GSM8K worked solution may be kept


def item_from_example(example: Any) -> EvalItem:
    """Build an eval item from one LangSmith example."""
    metadata = getattr(example, "metadata", None) or {}
    return item_from_fields(
        getattr(example, "inputs", None) or {},
        getattr(example, "outputs", None) or {},
        id=str(getattr(example, "id", "?")),
        category=metadata.get("category"),
    )


def item_from_fields(
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any] | None = None,
    *,
    id: str = "?",
    category: str | None = None,
) -> EvalItem:
    """Build an eval item from an example's inputs and (reference) outputs."""
    outputs = outputs or {}
    where = f"LangSmith example {id}"
    key = next((k for k in _INPUT_KEYS if isinstance(inputs.get(k), str)), None)
    turns: list[str] = []
    if key is not None:
        turns = [inputs[key]]
    elif isinstance(inputs.get("messages"), list):
        turns = [
            m["content"]
            for m in inputs["messages"]
            if isinstance(m, Mapping)
            and m.get("role") in ("user", "human")
            and isinstance(m.get("content"), str)
        ]
    if not turns or not all(t.strip() for t in turns):
        raise EvalDatasetError(
            f"{where}: inputs need one of {', '.join(_INPUT_KEYS)} (a string) or 'messages' "
            f"with user turns; got keys {sorted(inputs)}."
        )
    expected: Any = next((outputs[k] for k in _OUTPUT_KEYS if k in outputs), [])
    if isinstance(expected, str):
        expected = [expected]
    if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
        raise EvalDatasetError(f"{where}: the expected answer must be a string or a list of them.")
    numeric = outputs.get("numeric")
    numeric = float(numeric) if isinstance(numeric, (int, float)) else None
    pattern = outputs.get("pattern")
    reference = None
    if found := _gsm8k_solution(outputs, where):
        # GSM8K's published field, a worked solution ending "#### N": N is the target, as in
        # a JSONL file; the whole solution is no answer anyone would write.
        solution, target = found
        numeric = target if numeric is None else numeric
        expected = [] if expected == [solution] else expected
        reference = solution
    return EvalItem(
        id=id,
        turns=turns,
        expected=expected,
        numeric=numeric,
        pattern=pattern if isinstance(pattern, str) else None,
        reference=reference,
        category=category,
    )


def _gsm8k_solution(outputs: Mapping[str, Any], where: str) -> tuple[str, float] | None:
    """Return the GSM8K worked solution under 'answer' or 'output' and its N; None if none.

    Datasets uploaded from GSM8K keep the solution under either name. A field whose last
    line opens "####" but holds no number there is an error, not an expected text that no
    answer could ever match.
    """
    for key in _SOLUTION_KEYS:
        text = outputs.get(key)
        if not isinstance(text, str):
            continue
        if (target := gsm8k_final_number(text)) is not None:
            return text, target
        last = text.strip().splitlines()[-1].strip() if text.strip() else ""
        if last.startswith("####"):
            raise EvalDatasetError(
                f"{where}: '{key}' ends like a GSM8K solution, {last[-40:]!r}, but with no "
                "number N there; end it with '#### N' (N a number such as 18, 1,250 or -3), "
                "or give the answer as 'expected' (text) or 'numeric' (a number) instead."
            )
    return None


def load_langsmith_dataset(
    name: str, *, client: Any = None, limit: int | None = None
) -> list[EvalItem]:
    """Read a LangSmith dataset by name (needs ``LANGSMITH_API_KEY`` unless `client` is given)."""
    if client is None:
        from langsmith import Client

        client = Client()
    items = [item_from_example(e) for e in client.list_examples(dataset_name=name, limit=limit)]
    if not items:
        raise EvalDatasetError(f"LangSmith dataset {name!r} holds no examples.")
    return items


def evaluate_system(
    system: str,
    data: str | Iterable[Any],
    *,
    client: Any = None,
    cache_dir: str | Path | None = None,
    experiment_prefix: str | None = None,
    max_concurrency: int = 1,
    upload_results: bool = True,
) -> Any:
    """Run one system (preset, config file or ``single:<spec>``) through ``langsmith.evaluate``.

    `data` is a dataset name or examples, as ``evaluate`` takes them. Model calls go through
    the on-disk call cache in `cache_dir` (a temporary folder, removed afterwards, when
    None), so a second experiment on the same data costs no generation. With
    ``upload_results=False`` no experiment, run or feedback is sent. Returns LangSmith's
    ``ExperimentResults``.
    """
    from langsmith import evaluate, tracing_context

    from langgraph_moa.eval.runner import Evaluation

    if cache_dir is None:  # a cache for this experiment only, removed when it is done
        with tempfile.TemporaryDirectory(prefix="moa-ls-", ignore_cleanup_errors=True) as tmp:
            return evaluate_system(
                system,
                data,
                client=client,
                cache_dir=tmp,
                experiment_prefix=experiment_prefix,
                max_concurrency=max_concurrency,
                upload_results=upload_results,
            )
    evaluation = Evaluation([system], [], cache_dir, plots=False, exports=False)
    runnable = evaluation.systems[0]

    def target(inputs: dict[str, Any]) -> dict[str, Any]:
        # evaluate() traces "locally" without uploads, but LangChain's own tracer would still
        # send the graph's nested runs to the default endpoint: switch it off here.
        with tracing_context(enabled=None if upload_results else False):
            row = _run_to_the_end(evaluation.run_item(runnable, item_from_fields(inputs)))
        if row["error"] is not None:
            raise RuntimeError(row["error"])
        return {
            "answer": row["answer"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "calls": row["calls"],
        }

    def correct(
        inputs: dict[str, Any], outputs: dict[str, Any], reference_outputs: dict[str, Any]
    ) -> dict[str, Any]:
        item = item_from_fields(inputs, reference_outputs)
        if not item.verifiable:
            return {"key": "correct", "score": None, "comment": "no expected answer"}
        return {"key": "correct", "score": int(bool(score(item, outputs["answer"])["correct"]))}

    try:
        return evaluate(
            target,
            data=data,
            evaluators=[correct],
            # As given, less the key of a ``single:`` system's endpoint URL (``?key=...``).
            experiment_prefix=experiment_prefix or f"moa-{redact_spec(system)}",
            metadata={"system": redact_spec(system)},
            max_concurrency=max_concurrency,
            client=client,
            upload_results=upload_results,
        )
    finally:
        # ``evaluate`` blocks until every example ran. Left open, the cache was closed by
        # garbage collection only (Python 3.13 warns: unclosed database).
        evaluation.close()


def _run_to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` from sync code: with `asyncio.run`, or apart where a loop runs here.

    LangSmith's ``evaluate`` calls the target in the caller's thread with
    ``max_concurrency=0`` (its own default). In a notebook cell that thread runs the
    kernel's event loop, where `asyncio.run` is refused: the work then runs on a loop of its
    own in a thread of its own, in a copy of this context (the tracing switch the target
    sets is a context variable). An interrupted wait (the kernel's interrupt, in a cell with
    a top-level ``await`` too) cancels it: its calls are not left to run, and be paid for,
    after the cell ended.
    """
    if loop_of_this_thread() is None:
        return asyncio.run(work)
    running: Future[tuple[asyncio.AbstractEventLoop, asyncio.Task[T]]] = Future()

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None  # a coroutine run by asyncio.run runs in a task
        running.set_result((asyncio.get_running_loop(), task))
        return await work

    return run_apart(
        lambda: asyncio.run(main()),
        lambda: running.add_done_callback(_cancel),  # cancel once it runs, not waiting
        keep_waiting=False,
        name="moa example",
    )


def _cancel(running: Future[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]]) -> None:
    """Cancel the task that `running` names, on its loop."""
    loop, task = running.result()
    with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: the work has ended
        loop.call_soon_threadsafe(task.cancel)
