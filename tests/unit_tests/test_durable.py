"""`open_checkpointer`: the savers it opens, and the serializer they store with."""

import logging
import sqlite3

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from langgraph_moa.graph.durable import allowing_answers, open_checkpointer
from tests.helpers import is_closed, opened_connections


class Answer(BaseModel):
    """A `response_format` model, as a user's application defines it."""

    text: str


def test_a_checkpointer_takes_the_serializer_that_allows_a_response_format(tmp_path, caplog):
    # `open_checkpointer` took no serializer: a pydantic `response_format` answer was read
    # back as an unregistered type (a warning now, a dict under LANGGRAPH_STRICT_MSGPACK),
    # and the documented fix needed a SqliteSaver built by hand.
    allowed = JsonPlusSerializer(allowed_msgpack_modules=[(Answer.__module__, "Answer")])
    plain = open_checkpointer(f"sqlite:///{tmp_path / 'plain.db'}")
    saver = open_checkpointer(f"sqlite:///{tmp_path / 'moa.db'}", serde=allowed)
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph"):
            plain.serde.loads_typed(plain.serde.dumps_typed(Answer(text="x")))
            assert "unregistered type" in caplog.text  # the default serializer does warn
            caplog.clear()
            back = saver.serde.loads_typed(saver.serde.dumps_typed(Answer(text="x")))
        assert back == Answer(text="x")
        assert caplog.text == ""
    finally:
        plain.conn.close()
        saver.conn.close()


class OwnSerializer:
    """A user's serializer, not LangGraph's: it has no msgpack allowlist to extend."""

    def __init__(self) -> None:
        self.inner = JsonPlusSerializer()

    def dumps_typed(self, obj):
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data):
        return self.inner.loads_typed(data)


def test_a_saver_with_its_own_serializer_is_given_an_answer_model_without_a_warning(caplog):
    # Adding the answer's model to a serializer that has no allowlist made LangGraph warn
    # at every graph built, without LANGGRAPH_STRICT_MSGPACK, that strict reading "will not
    # be enforced": nobody had asked for it.
    saver = InMemorySaver(serde=OwnSerializer())
    with caplog.at_level(logging.WARNING, logger="langgraph"):
        assert allowing_answers(saver, Answer) is saver
    assert caplog.text == ""
    allowed = allowing_answers(
        InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=None)), Answer
    )
    back = allowed.serde.loads_typed(allowed.serde.dumps_typed(Answer(text="x")))
    assert back == Answer(text="x")  # an allowlist is extended


def test_a_checkpoint_file_sqlite_refuses_is_closed_again(tmp_path, monkeypatch):
    # The caller got SQLite's error, not a saver whose connection to close: it was closed by
    # garbage collection only (on Python 3.13, "ResourceWarning: unclosed database").
    opened = opened_connections(monkeypatch)
    path = tmp_path / "moa.db"
    path.write_bytes(b"not a database" * 300)
    with pytest.raises(sqlite3.DatabaseError):
        open_checkpointer(f"sqlite:///{path}")
    assert len(opened) == 1 and is_closed(opened[0])
