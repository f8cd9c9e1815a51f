"""Whether a tool call's arguments keep to its tool's JSON schema, read as its tool reads them.

An agent's ToolNode validates a call's arguments with the tool's pydantic model and answers
a call that fails with the validation error: the agent pays for another turn. A call that
fails is therefore one a call that passes should win over (`check_tool_calls`). Only the
simple parts of a schema are read (``type``, ``enum``, ``required``, ``properties``,
``additionalProperties: false``, ``items``, ``anyOf``); what else a schema says (``$ref``,
``format``, bounds) is not judged, so a call is never held back for a rule read wrongly.
Each simple type is read by pydantic's lax mode, as the tool's model reads it: ``"3"`` is an
integer, ``"three"`` is not.
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


def argument_problem(args: dict[str, Any], schema: Any) -> str | None:
    """Return how `args` break the tool's parameters `schema` (after "called 'name' "), or None."""
    return _object_problem(args, schema, "") if isinstance(schema, dict) else None


def _object_problem(value: dict[str, Any], schema: dict[str, Any], path: str) -> str | None:
    for name in schema.get("required") or []:
        if name not in value:
            return f"without its required argument {path + str(name)!r}"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    if schema.get("additionalProperties") is False:
        for key in value:
            if key not in properties:
                return f"with the argument {path + key!r}, which its schema does not take"
    for key, part in properties.items():
        if key in value and (problem := _value_problem(value[key], part, path + key)):
            return problem
    return None


def _value_problem(value: Any, schema: Any, where: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    choices = schema.get("anyOf")
    if isinstance(choices, list) and choices:
        if any(_value_problem(value, c, where) is None for c in choices):
            return None
        return _refused(value, where)
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return _refused(value, where)
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if kinds and all(k in _ADAPTERS for k in kinds) and not any(_fits(value, k) for k in kinds):
        return _refused(value, where)
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        return _object_problem(value, schema, where + ".")
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        for i, item in enumerate(value):
            if problem := _value_problem(item, items, f"{where}[{i}]"):
                return problem
    return None


def _refused(value: Any, where: str) -> str:
    shown = beginning(json.dumps(value, ensure_ascii=False, default=str), 60)
    return f"with {where!r} = {shown}, which its schema does not take"


def _fits(value: Any, kind: str) -> bool:
    try:
        _ADAPTERS[kind].validate_python(value)
    except ValidationError:
        return False
    return True
