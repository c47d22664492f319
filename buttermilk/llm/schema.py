"""A model's answer as JSON, checked against a schema.

Two kinds of schema: a JSON Schema dict (``schema:``), checked by the ``jsonschema``
library (draft 2020-12, ``$ref`` allowed), or a pydantic model (``schema_model:``, an
import path), whose validated dump is the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pkgutil import resolve_name
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from buttermilk.errors import PermanentError, UsageError

#: Characters of a problem told to the model when it is asked again (about: a path, a
#: message cut at 300 characters, and a note when the answer was cut off).
PROBLEM_CHARS = 400
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


def feedback(problem: str) -> str:
    """What the model is told when its answer did not fit (with ``schema_feedback``)."""
    return f"That answer cannot be used: {problem}. Answer again, with only the JSON."


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
    """Answers validated by a JSON Schema dict, with the ``jsonschema`` library: draft
    2020-12 unless the schema's ``$schema`` names another; ``$ref`` to ``$defs`` (or any
    part of the schema itself) allowed, references outside it refused.

    Raises UsageError (one line, naming where) when the schema itself is not valid or a
    ``$ref`` cannot be resolved; :meth:`validate` raises :class:`AnswerProblem` naming the
    path of the bad value (``$.items[2].label: 'maybe' is not one of [...]``).
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        # jsonschema takes ~60 ms to import: only flows with a schema pay it.
        from jsonschema import Draft202012Validator, SchemaError, validators

        self.schema: dict[str, Any] = _plain(schema)
        cls = validators.validator_for(self.schema, default=Draft202012Validator)
        try:
            cls.check_schema(self.schema)
        except SchemaError as exc:
            raise UsageError(f"schema at {exc.json_path}: {_short(exc.message)}") from None
        self._validator = cls(self.schema)
        _check_refs(_resolver(self.schema), self.schema, "$")

    def validate(self, value: Any) -> Any:
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(value))
        if error is not None:
            raise AnswerProblem(f"{error.json_path}: {_short(error.message)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return dict(self.schema)


def _short(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _resolver(schema: dict[str, Any]) -> Any:
    """Resolves references against ``schema`` alone (no registry, nothing retrieved)."""
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012, specification_with

    dialect = schema.get("$schema")
    spec = specification_with(dialect, default=DRAFT202012) if dialect else DRAFT202012
    return Registry().resolver_with_root(spec.create_resource(schema))


def _check_refs(resolver: Any, node: Any, where: str) -> None:
    """Every ``$ref`` in ``node`` resolves inside the schema (nothing is fetched)."""
    from referencing.exceptions import Unresolvable

    if isinstance(node, list):
        for n, item in enumerate(node):
            _check_refs(resolver, item, f"{where}[{n}]")
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise UsageError(
                f"schema at {where}: $ref {ref!r} cannot be resolved (refer to $defs or "
                "another part of the schema itself)"
            ) from None
    for key, value in node.items():
        if key not in ("enum", "const", "default", "examples"):
            _check_refs(resolver, value, f"{where}.{key}")


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    return node
