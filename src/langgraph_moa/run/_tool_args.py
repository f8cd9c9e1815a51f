"""Whether a tool call's arguments keep to its tool's JSON schema, read as its tool reads them.

An agent's ToolNode validates a call's arguments with the tool's pydantic model and answers
a call that fails with the validation error: the agent pays for another turn. A call that
fails is therefore one a call that passes should win over (`check_tool_calls`). Only the
simple parts of a schema are read (``type``, ``enum``, ``required``, ``properties``,
``additionalProperties: false``, ``items``, ``anyOf``); what else a schema says (``$ref``,
``format``, bounds) is not judged, so a call is never held back for a rule read wrongly.
Each simple type is read by pydantic's lax mode, as the tool's model reads it: ``"3"`` is an
integer, ``"three"`` is not. The type of a value with a ``format`` is not judged: a datetime's
schema says ``"string"``, yet its model reads a Unix time as one.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from langgraph_moa._unicode import beginning

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "integer": TypeAdapter(int),
    "number": TypeAdapter(float),
    "string": TypeAdapter(str),
    "boolean": TypeAdapter(bool),
    "array": TypeAdapter(list),
    "object": TypeAdapter(dict),
    "null": TypeAdapter(type(None)),
}


_DEEPEST = 32
"""How deep into the arguments the schema is read: below, nothing is judged (a schema that
refers to itself, a value nested past Python's recursion limit)."""


def argument_problem(args: dict[str, Any], schema: Any) -> str | None:
    """Return how `args` break the tool's parameters `schema` (after "called 'name' "), or None.

    It never raises: a part of the schema that is not what JSON Schema says it is (a
    ``required`` that is not a list of names, a ``type`` that is not a name) is not judged.
    """
    return _object_problem(args, schema, "", 0) if isinstance(schema, dict) else None


def _object_problem(
    value: dict[Any, Any], schema: dict[Any, Any], path: str, depth: int
) -> str | None:
    required = schema.get("required")
    for name in required if isinstance(required, list) else []:
        if isinstance(name, str) and name not in value:
            return f"without its required argument {path + name!r}"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    if schema.get("additionalProperties") is False:
        for key in value:
            if key not in properties:
                return f"with the argument {f'{path}{key}'!r}, which its schema does not take"
    for key, part in properties.items():
        if key in value and (problem := _value_problem(value[key], part, f"{path}{key}", depth)):
            return problem
    return None


def _value_problem(value: Any, schema: Any, where: str, depth: int) -> str | None:
    if not isinstance(schema, dict) or depth >= _DEEPEST:
        return None
    depth += 1
    choices = schema.get("anyOf")
    if isinstance(choices, list) and choices:
        if any(_value_problem(value, c, where, depth) is None for c in choices):
            return None
        return _refused(value, where)
    enum = schema.get("enum")
    if isinstance(enum, list) and not _in_enum(value, enum):
        return _refused(value, where)
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if "format" in schema:  # a datetime is a "string" whose model also reads a Unix time
        kinds = []
    known = all(isinstance(k, str) and k in _ADAPTERS for k in kinds)
    if kinds and known and not any(_fits(value, k) for k in kinds):
        return _refused(value, where)
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        return _object_problem(value, schema, where + ".", depth)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        for i, item in enumerate(value):
            if problem := _value_problem(item, items, f"{where}[{i}]", depth):
                return problem
    return None


def _in_enum(value: Any, enum: list[Any]) -> bool:
    """Tell whether `value` is one of `enum`, read as the tool's model reads it.

    An ``IntEnum`` (or a float one) reads ``"2"`` as its member 2 in lax mode; a value
    compared only by equality lost to a call that spelled the member as a number.
    """
    if value in enum:
        return True
    for kind, number in (("integer", int), ("number", float)):
        if any(type(member) is number for member in enum):
            try:
                if _ADAPTERS[kind].validate_python(value) in enum:
                    return True
            except ValidationError:
                pass
    return False


def _refused(value: Any, where: str) -> str:
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):
        shown = type(value).__name__
    return f"with {where!r} = {beginning(shown, 60)}, which its schema does not take"


def _fits(value: Any, kind: str) -> bool:
    try:
        _ADAPTERS[kind].validate_python(value)
    except ValidationError:
        return False
    return True
