"""Sentiment scores from VADER, a lexicon and rules tuned to social media text.

VADER (Hutto & Gilbert, 2014) ships its lexicon inside the ``vaderSentiment`` package, so
this agent works offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from buttermilk.errors import PermanentError
from buttermilk.records import Record


class Vader:
    """Score ``record.content`` with VADER: neg / neu / pos shares, compound in [-1, 1], label.

    ``threshold``: compound at or above it is positive, at or below minus it negative
    (0.05 in the VADER paper).
    """

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(record.content, str):
            raise PermanentError(
                f"record {record.record_id}: VADER needs text content, "
                f"got {type(record.content).__name__}"
            )
        scores = self.analyzer.polarity_scores(record.content)
        compound = scores["compound"]
        if compound >= self.threshold:
            label = "positive"
        elif compound <= -self.threshold:
            label = "negative"
        else:
            label = "neutral"
        return {**scores, "label": label}
