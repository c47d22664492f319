"""A model's answer as JSON, checked against a schema.

Two kinds of schema: a JSON Schema dict (``schema:``), checked by a small validator of
the common subset listed in :data:`KEYWORDS` (a schema using any other validation keyword
is refused when the agent is built, so nothing passes unchecked), or a pydantic model
(``schema_model:``, an import path), whose validated dump is the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pkgutil import resolve_name
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from buttermilk.errors import PermanentError, UsageError

#: Validation keywords the JSON Schema subset understands.
KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
    }
)
#: Keywords that only describe (ignored when validating).
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "format"}
)
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


class InvalidAnswerError(PermanentError):
    """Raised when the model's answers are still not valid JSON for the schema after
    ``schema_retries`` more tries; the message quotes the last raw answer."""


class AnswerProblem(ValueError):
    """Raised when one answer is not JSON or breaks the schema; the message says where."""


class AnswerSchema(Protocol):
    """What an answer must look like."""

    def validate(self, value: Any) -> Any:
        """The answer as stored; raises :class:`AnswerProblem` when it does not fit."""
        ...

    def json_schema(self) -> dict[str, Any]:
        """The schema as JSON Schema (shown to the model, part of the cache key)."""
        ...


def extract_json(text: str) -> Any:
    """Parse an answer as JSON, tolerating a ```json fence or words around one object."""
    fenced = _FENCE.search(text)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        error = exc
    starts = [i for i in (candidate.find("{"), candidate.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = candidate.rfind("}" if candidate[start] == "{" else "]")
        if end > start:
            try:
                return json.loads(candidate[start : end + 1])
            except json.JSONDecodeError:
                pass
    raise AnswerProblem(f"the answer is not valid JSON ({error.msg} at char {error.pos})")


def load_schema(schema: Mapping[str, Any] | None, schema_model: str | None) -> AnswerSchema | None:
    """The agent's schema from its config, or None; a UsageError when it cannot be used."""
    if schema is not None and schema_model is not None:
        raise UsageError("give either schema or schema_model, not both")
    if schema is not None:
        return JSONSchema(schema)
    if schema_model is not None:
        return ModelSchema(schema_model)
    return None


class ModelSchema:
    """Answers validated by a pydantic model, given by import path."""

    def __init__(self, path: str) -> None:
        try:
            model = resolve_name(path)
        except Exception as exc:  # no module, no attribute, a bad path: several types
            raise UsageError(f"schema_model: cannot import {path!r} ({exc})") from None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise UsageError(f"schema_model: {path!r} is not a pydantic model")
        self.model: type[BaseModel] = model

    def validate(self, value: Any) -> Any:
        try:
            return self.model.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            problems = [f"$.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise AnswerProblem("; ".join(problems)) from None

    def json_schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


class JSONSchema:
    """Answers validated by a JSON Schema dict (the subset in :data:`KEYWORDS`)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = _plain(schema)
        _check_schema(self.schema, "$")

    def validate(self, value: Any) -> Any:
        _validate(value, self.schema, "$")
        return value

    def json_schema(self) -> dict[str, Any]:
        return dict(self.schema)


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    return node


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise UsageError(f"schema at {where} must be a mapping, got {schema!r}")
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise UsageError(
            f"schema at {where}: unsupported keyword(s) {sorted(unknown)} "
            f"(supported: {', '.join(sorted(KEYWORDS))}; or use schema_model)"
        )
    types = schema.get("type", [])
    for name in types if isinstance(types, list) else [types]:
        if name not in TYPES:
            raise UsageError(f"schema at {where}: unknown type {name!r}")
    for key, sub in schema.get("properties", {}).items():
        _check_schema(sub, f"{where}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _check_schema(schema[key], f"{where}.{key}")
    for n, sub in enumerate(schema.get("anyOf", [])):
        _check_schema(sub, f"{where}.anyOf[{n}]")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _has_type(value: Any, name: str) -> bool:
    found = _json_type(value)
    return found == name or (name == "number" and found == "integer")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _validate(value: Any, schema: dict[str, Any], path: str) -> None:
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(_has_type(value, t) for t in allowed):
            raise AnswerProblem(f"{path}: expected {' or '.join(allowed)}, got {_json_type(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        raise AnswerProblem(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and not _same(value, schema["const"]):
        raise AnswerProblem(f"{path}: {value!r} is not {schema['const']!r}")
    if "anyOf" in schema:
        problems = []
        for sub in schema["anyOf"]:
            try:
                _validate(value, sub, path)
                break
            except AnswerProblem as exc:
                problems.append(str(exc))
        else:
            raise AnswerProblem(f"{path}: matches no choice of anyOf ({'; '.join(problems)})")
    if isinstance(value, dict):
        _validate_object(value, schema, path)
    elif isinstance(value, list):
        _validate_array(value, schema, path)
    elif isinstance(value, str):
        _check_size(len(value), schema, "minLength", "maxLength", path, "characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise AnswerProblem(f"{path}: {value!r} does not match {schema['pattern']!r}")
    elif _has_type(value, "number"):
        _validate_number(value, schema, path)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    missing = [key for key in schema.get("required", []) if key not in value]
    if missing:
        raise AnswerProblem(f"{path}: missing required key(s) {missing}")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], f"{path}.{key}")
        elif extra is False:
            raise AnswerProblem(f"{path}: unexpected key {key!r} (allowed: {sorted(properties)})")
        elif isinstance(extra, dict):
            _validate(item, extra, f"{path}.{key}")


def _validate_array(value: list[Any], schema: dict[str, Any], path: str) -> None:
    _check_size(len(value), schema, "minItems", "maxItems", path, "items")
    items = schema.get("items")
    if isinstance(items, dict):
        for n, item in enumerate(value):
            _validate(item, items, f"{path}[{n}]")


def _validate_number(value: float, schema: dict[str, Any], path: str) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise AnswerProblem(f"{path}: {value} is less than the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise AnswerProblem(f"{path}: {value} is more than the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise AnswerProblem(f"{path}: {value} must be more than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        raise AnswerProblem(f"{path}: {value} must be less than {schema['exclusiveMaximum']}")


def _check_size(
    size: int, schema: dict[str, Any], low: str, high: str, path: str, unit: str
) -> None:
    if low in schema and size < schema[low]:
        raise AnswerProblem(f"{path}: {size} {unit}, fewer than {low}={schema[low]}")
    if high in schema and size > schema[high]:
        raise AnswerProblem(f"{path}: {size} {unit}, more than {high}={schema[high]}")
