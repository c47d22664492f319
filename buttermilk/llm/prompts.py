"""Prompt templates: Jinja2 with strict undefined names, checked when the agent is built.

A template sees three names: ``record`` (the :class:`~buttermilk.records.Record`:
``record.content``, ``record.metadata.title``, ...), ``outputs`` (earlier agents' outputs
by agent name) and ``parameters`` (the batch's parameters). The ``json`` filter writes a
value as JSON (``{{ outputs.vader | json }}``).

A name outside those three, or a field ``record`` does not have, is a
:class:`~buttermilk.errors.UsageError` when the agent is built. What only shows when a
record is rendered (a metadata key or an output that is missing) is a
:class:`PromptError`, which fails the job at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes

from buttermilk.errors import PermanentError, UsageError
from buttermilk.records import Record

CONTEXT_NAMES = frozenset({"record", "outputs", "parameters"})


class PromptError(PermanentError, UsageError):
    """Raised when a prompt template cannot be rendered for a record (a missing key or
    output, a failing filter): the job fails without retries."""


def _to_json(value: Any, indent: int | None = None) -> str:
    if isinstance(value, Mapping):
        value = dict(value)
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def _environment() -> Environment:
    env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["json"] = _to_json
    return env


ENVIRONMENT = _environment()


class PromptTemplate:
    """One compiled template; ``name`` says where it came from in error messages."""

    def __init__(self, source: str, name: str) -> None:
        self.name = name
        self.source = source
        try:
            ast = ENVIRONMENT.parse(source)
        except TemplateSyntaxError as exc:
            raise UsageError(
                f"{name}: template syntax error on line {exc.lineno}: {exc.message}"
            ) from None
        _check_names(ast, name)
        self.template = ENVIRONMENT.from_string(ast)
        # Every render copies the template's globals into its context: a plain dict copies
        # several times faster than the ChainMap Jinja keeps (over the environment's).
        self.template.globals = dict(self.template.globals)
        # A template without names or calls (a fixed system prompt) renders to one text.
        fixed = not meta.find_undeclared_variables(ast) and not any(
            ast.find_all((nodes.Call, nodes.Filter))  # `| random` differs at each render
        )
        try:
            self.fixed: str | None = self.template.render() if fixed else None
        except Exception as exc:  # e.g. {{ 1 // 0 }}: said as any render error would be
            raise UsageError(f"{name}: cannot render the template: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path, name: str) -> PromptTemplate:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{name}: cannot read {str(path)!r} ({exc.strerror})") from None
        return cls(source, f"{name} ({path})")

    def render(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> str:
        if self.fixed is not None:
            return self.fixed
        try:
            return self.template.render(
                record=record, outputs=dict(outputs), parameters=dict(parameters)
            )
        except UndefinedError as exc:
            raise PromptError(f"{self.name}: {exc.message} (record {record.record_id})") from None
        except Exception as exc:  # anything a template expression or filter may raise
            raise PromptError(
                f"{self.name}: {type(exc).__name__}: {exc} (record {record.record_id})"
            ) from None


def _check_names(ast: nodes.Template, name: str) -> None:
    """Refuse names a template cannot see, and ``record.X`` for a field Record lacks."""
    unknown = meta.find_undeclared_variables(ast) - CONTEXT_NAMES - set(ENVIRONMENT.globals)
    if unknown:
        raise UsageError(
            f"{name}: unknown name(s) {sorted(unknown)}: "
            f"templates see {', '.join(sorted(CONTEXT_NAMES))}"
        )
    fields = set(Record.model_fields)
    for node in ast.find_all(nodes.Getattr):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "record" and node.attr not in fields:
            raise UsageError(
                f"{name}: record has no field {node.attr!r} "
                f"(fields: {', '.join(sorted(fields))}; source fields are in record.metadata)"
            )
