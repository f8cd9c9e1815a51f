"""Checkpointers for durable runs: SQLite embedded, PostgreSQL for deployments.

With a checkpointer, every finished proposer call is saved as soon as it returns. A run that
is killed mid-layer resumes on the same thread (``graph.invoke(None, {"configurable":
{"thread_id": ...}})``) and calls only the proposers that had not answered yet.

```python
graph = create_moa_graph(config, checkpointer=open_checkpointer("sqlite:///moa.db"))
```
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_moa.errors import MoAConfigError

if TYPE_CHECKING:  # the postgres extra may be absent; a user's type checker sees it as Any then
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from langgraph.checkpoint.sqlite import SqliteSaver
    from psycopg import Connection as PgConnection


def allowing_answers(checkpointer: Any, response_format: Any) -> Any:
    """Return `checkpointer` with a pydantic `response_format` among the types it reads back.

    Under ``LANGGRAPH_STRICT_MSGPACK`` LangGraph reads back only the types of a graph's
    schemas, and the answer's channel (``structured_response``) is typed Any: the model came
    back as a dict. LangGraph's own shallow clone adds it (the caller's saver is unchanged);
    a permissive serializer (the default) allows every type already, with a warning that
    only `open_checkpointer`'s ``serde=`` silences. A serializer of the user's own has no
    allowlist: asked to extend one, LangGraph would warn at every graph that strict reading
    is not enforced, which nobody asked for; it is left as it is.
    """
    if not isinstance(response_format, type) or not isinstance(checkpointer, BaseCheckpointSaver):
        return checkpointer
    serde = checkpointer.serde
    if isinstance(serde, EncryptedSerializer):
        serde = serde.serde
    if not isinstance(serde, JsonPlusSerializer):
        return checkpointer
    return checkpointer.with_allowlist([_type_key(response_format)])


def reading_answers(graph: Any, response_format: Any) -> None:
    """Let `graph` run as a subgraph read a pydantic `response_format` back as itself.

    Compiled without a saver, the graph runs on its parent's; under ``LANGGRAPH_STRICT_MSGPACK``
    LangGraph reads its state through a copy of that saver allowing the graph's own types
    (its ``_serde_allowlist``, None when not strict), which `allowing_answers` never saw.
    That attribute is LangGraph's own (1.2 has no public way to add a type to a graph's
    allowlist but its schemas, where the answer is typed Any): were it renamed, this would
    do nothing, the answer would read back as a dict, and LangGraph would log the blocked
    type; test_embedding's strict-msgpack subgraph test fails then.
    """
    allowlist = getattr(graph, "_serde_allowlist", None)
    if isinstance(response_format, type) and allowlist is not None:
        graph._serde_allowlist = {*allowlist, _type_key(response_format)}


def _type_key(model: type) -> tuple[str, str]:
    return (model.__module__, model.__name__)


def open_checkpointer(
    url: str, *, serde: SerializerProtocol | None = None
) -> SqliteSaver | PostgresSaver:
    """Open a synchronous checkpointer from ``sqlite:///path.db`` or ``postgresql://...``.

    The caller owns it and should close its connection (``saver.conn.close()``) when done.
    For async runs, pass LangGraph's `AsyncSqliteSaver` or `AsyncPostgresSaver` yourself.
    `serde` is the saver's serializer (LangGraph's default if None): a pydantic
    `response_format` answer is read back as its own type only where the serializer allows
    it, ``JsonPlusSerializer(allowed_msgpack_modules=[("myapp", "Answer")])``.
    """
    if url.startswith("sqlite:///"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False)
        sqlite_saver = SqliteSaver(conn, serde=serde)
        with _closed_on_failure(conn):
            sqlite_saver.setup()
        return sqlite_saver
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg import Connection
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise MoAConfigError(
                f"PostgreSQL checkpoints need extra packages ({exc.name} is missing): "
                "pip install 'langgraph-moa[postgres]'."
            ) from None
        # LangGraph's Postgres saver needs autocommit and dict rows.
        pg = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        postgres_saver = PostgresSaver(pg, serde=serde)
        with _closed_on_failure(pg):
            postgres_saver.setup()
        return postgres_saver
    raise MoAConfigError(
        f"Unknown checkpoint store {url!r}: use sqlite:///path/to/moa.db or postgresql://..."
    )


@contextmanager
def _closed_on_failure(conn: sqlite3.Connection | PgConnection[Any]) -> Iterator[None]:
    """Close `conn` if the block raises: the caller gets the error, not a saver to close.

    Left to garbage collection, the connection of a file the saver's `setup` refused stayed
    open until then (on Python 3.13, "ResourceWarning: unclosed database").
    """
    try:
        yield
    except BaseException:
        conn.close()
        raise
