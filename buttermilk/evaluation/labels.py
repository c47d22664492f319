"""Labels as the statistics see them: each distinct value a code, in one stable order.

Values are compared exactly as stored: ``"1"`` (text) and ``1`` (a number) are different
labels, and so are ``True`` and ``1`` (Python alone would take them for one), while ``1``
and ``1.0`` are one number. The order of the codes (the classes, the confusion matrix's
rows, an ordinal scale) is ``spec.categories`` first, in its order, then every other
value seen: booleans, numbers, text, then anything else (objects, lists: by their JSON),
each group sorted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from buttermilk import values
from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.errors import EvaluationError

LabelKey = tuple[int, Any]
"""(group, value): 0 booleans, 1 numbers, 2 text, 3 anything else (its JSON text)."""


def is_number(value: Any) -> bool:
    """A finite int, float or Decimal (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return math.isfinite(value)


def label_key(value: Any) -> LabelKey:
    """The key under which a value counts as one label (see the module's docstring)."""
    if isinstance(value, bool):
        return (0, value)
    if is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, values.dumps_text(value))


class Codebook:
    """Every label and truth of a report, each with its code (0, 1, ...) in stable order."""

    def __init__(self, spec: EvaluationSpec, seen: Iterable[Any]) -> None:
        """Codes for ``spec.categories`` (then ``spec.positive``) and every value in
        ``seen`` (None skipped). Raises EvaluationError for an ordinal scale it cannot
        order: text (or other) values that ``spec.categories`` does not list."""
        declared = list(spec.categories or [])
        keys = {label_key(v) for v in declared}
        extra: dict[LabelKey, Any] = {}
        for value in [spec.positive, *seen]:
            if value is None:
                continue
            key = label_key(value)
            if key not in keys and key not in extra:
                extra[key] = value
        if spec.kind == "ordinal":
            unordered = [v for k, v in extra.items() if k[0] != 1]
            if unordered or (declared and extra):
                shown = (unordered or list(extra.values()))[0]
                raise EvaluationError(
                    f"evaluate: the ordinal label {shown!r} has no place on the scale: list "
                    "every label in order with evaluate.categories=[...] (only numbers order "
                    "themselves)"
                )
        ordered = sorted(extra, key=lambda k: (k[0], k[1]))
        self.values: list[Any] = declared + [extra[k] for k in ordered]
        self._codes: dict[LabelKey, int] = {
            label_key(v): code for code, v in enumerate(self.values)
        }

    def __len__(self) -> int:
        return len(self.values)

    def code(self, value: Any) -> int:
        return self._codes[label_key(value)]
