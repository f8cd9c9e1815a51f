"""`open_checkpointer`: the savers it opens, and the serializer they store with."""

import logging

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from langgraph_moa.graph.durable import open_checkpointer


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
