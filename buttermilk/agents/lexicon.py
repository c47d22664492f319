"""Count matches of keyword or regular-expression lexicons, per category."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from buttermilk.errors import PermanentError, UsageError
from buttermilk.records import Record


class Lexicon:
    """Match each category's terms in ``record.content``.

    ``categories``: category name -> list of terms.
    ``regex``: terms are regular expressions (otherwise literal words or phrases).
    ``whole_words``: literal terms only match whole words.
    ``case_sensitive``: match case exactly.

    Output: ``{"counts": {category: n}, "matches": {category: [matched text]},
    "categories": [categories with at least one match]}``.
    """

    def __init__(
        self,
        categories: Mapping[str, list[str]],
        regex: bool = False,
        whole_words: bool = True,
        case_sensitive: bool = False,
    ) -> None:
        if not categories:
            raise UsageError("Lexicon needs at least one category of terms")
        flags = 0 if case_sensitive else re.IGNORECASE
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name, terms in categories.items():
            if not terms:
                raise UsageError(f"Lexicon category {name!r} has no terms")
            parts = []
            for term in terms:
                part = term if regex else re.escape(term)
                if whole_words and not regex:
                    part = rf"\b{part}\b"
                parts.append(f"(?:{part})")
            try:
                self.patterns[name] = re.compile("|".join(parts), flags)
            except re.error as exc:
                raise UsageError(
                    f"Lexicon category {name!r}: bad regular expression ({exc})"
                ) from None

    def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(record.content, str):
            raise PermanentError(f"record {record.record_id}: Lexicon needs text content")
        matches = {
            name: [m.group(0) for m in p.finditer(record.content)]
            for name, p in self.patterns.items()
        }
        return {
            "counts": {name: len(found) for name, found in matches.items()},
            "matches": matches,
            "categories": [name for name, found in matches.items() if found],
        }
