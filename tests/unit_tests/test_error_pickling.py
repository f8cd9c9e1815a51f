"""The package's errors cross a process boundary whole (a `multiprocessing` or
`ProcessPoolExecutor` worker's exception comes back to its parent pickled)."""

import errno
import pickle

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa import errors

FAILED = {
    "role": "proposer",
    "layer": 1,
    "proposer": 0,
    "sample": 0,
    "configured_model": "m",
    "error": "boom",
}
ERRORS = {
    "missing-key": lambda: errors.MissingAPIKeyError("openai:gpt-4o", "OPENAI_API_KEY"),
    "missing-extra": lambda: errors.MissingExtraError("Serving", "serve", "fastapi"),
    "all-proposers": lambda: errors.AllProposersFailedError(1, [FAILED]),
    "budget": lambda: errors.BudgetExhaustedError(10, 5, [FAILED]),
    "aggregator": lambda: errors.AggregatorFailedError("m", ValueError("x"), [FAILED]),
    "empty": lambda: errors.EmptyResponseError("No text.", AIMessage("")),
    "stream-broken": lambda: errors.StreamBrokenError(3),
    "retry-past-deadline": lambda: errors.RetryPastDeadlineError("Too long.", 12.5),
    "request-timeout": lambda: errors.RequestTimeoutError(3.0),
    "config": lambda: errors.MoAConfigError("A rule."),
}


@pytest.mark.parametrize("make", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_unpickles_with_its_message_and_attributes(make):
    # An error whose constructor takes other arguments than its message was rebuilt from
    # the message alone: unpickling raised TypeError (a missing argument) or ValueError,
    # or made another message (StreamBrokenError), so a worker's error never reached its
    # parent as itself.
    error = make()
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (str(copy), copy.args) == (str(error), error.args)
    assert copy.__dict__.keys() == error.__dict__.keys()
    assert repr(vars(copy)) == repr(vars(error))


BUILT_IN = {
    # ImportError keeps its message as `msg` too, OSError its number and text: attributes
    # of the built-in class, set by its constructor, not held in the error's __dict__.
    "missing-extra": (
        lambda: errors.MissingExtraError("Serving", "serve", "fastapi"),
        ("msg", "name", "path"),
    ),
    "call-timeout": (
        lambda: errors.CallTimeoutError(errno.ETIMEDOUT, "timed out"),
        ("errno", "strerror", "filename"),
    ),
}


@pytest.mark.parametrize(("make", "names"), BUILT_IN.values(), ids=BUILT_IN.keys())
def test_an_error_unpickles_with_its_built_in_base_classs_attributes(make, names):
    # Made without its constructor, an error of ImportError lost `msg` (None) and one of
    # OSError its errno and strerror, and wrote another message: "(110, 'timed out')".
    error = make()
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert [getattr(copy, n) for n in names] == [getattr(error, n) for n in names]
