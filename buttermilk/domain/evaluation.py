"""What to score and what a report holds: the evaluation's shared shapes (below the store).

A flow's ``evaluate:`` block (or ``batch.evaluate`` / the API's ``evaluate``) names which
output is the label and what it is compared with. ``Report`` is the one shape the CLI's
JSON, the API and the dashboard read; the statistics behind it live in
:mod:`buttermilk.evaluation` and come from scikit-learn, statsmodels, scipy and
``krippendorff`` (none are written by hand).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from buttermilk.domain.statuses import JobStatus

Kind = Literal["nominal", "ordinal", "interval"]
TRUTH_ROOTS = ("ground_truth", "metadata")
OVERALL = "overall"
"""``Score.variant`` of the score over every combination's jobs together."""
MISSING_REASONS = ("not_finished", "failed", "no_label", "no_truth")
MAJORITY = "majority"
"""``Score.variant`` of the majority-vote label's score against the truth."""


def _check_path(value: str, what: str) -> str:
    parts = value.split(".")
    if not value or any(not part for part in parts):
        raise ValueError(f"{what} {value!r} is not a dotted path such as judge.answer.label")
    return value


class EvaluationSpec(BaseModel):
    """Which output is the label, and what it is compared with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(
        description="A dotted path into a job's outputs: AGENT.KEY[.KEY...], e.g. "
        "judge.answer.label (the agent's name first)."
    )
    truth: str = Field(
        default="ground_truth",
        description="ground_truth (the record's), ground_truth.PATH, or metadata.PATH.",
    )
    kind: Kind = Field(
        default="nominal",
        description="nominal (categories), ordinal (ordered categories) or interval "
        "(numeric scores): chooses the statistics and Krippendorff's alpha's level.",
    )
    positive: str | int | bool | None = Field(
        default=None,
        description="The positive class, for binary precision / recall / F1 (optional).",
    )
    categories: list[Any] | None = Field(
        default=None,
        description="The labels in their order (optional): orders an ordinal scale of text "
        "labels (required for one), and the classes and confusion matrix of any kind; "
        "labels not listed follow, sorted.",
    )

    @field_validator("categories")
    @classmethod
    def _distinct_categories(cls, value: list[Any] | None) -> list[Any] | None:
        if value is None:
            return None
        seen: set[tuple[bool, Any]] = set()
        for item in value:
            if isinstance(item, dict | list) or item is None:
                raise ValueError(f"evaluate.categories: {item!r} is not a label (text, number)")
            key = (isinstance(item, bool), item)
            if key in seen:
                raise ValueError(f"evaluate.categories lists {item!r} twice")
            seen.add(key)
        return value

    @property
    def agent(self) -> str:
        """The agent whose output holds the label (the label path's first segment)."""
        return self.label.split(".")[0]

    @field_validator("label")
    @classmethod
    def _label_path(cls, value: str) -> str:
        _check_path(value, "evaluate.label")
        if "." not in value:
            raise ValueError(
                f"evaluate.label {value!r} names an agent but no key of its output: give "
                f"AGENT.KEY[.KEY...], e.g. {value}.label"
            )
        return value

    @field_validator("positive")
    @classmethod
    def _positive_kind(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("kind") == "interval":
            raise ValueError(
                "the positive class is for classes (kind nominal or ordinal); kind "
                "interval scores numbers: leave evaluate.positive out"
            )
        return value

    @field_validator("truth")
    @classmethod
    def _truth_path(cls, value: str) -> str:
        _check_path(value, "evaluate.truth")
        root = value.split(".")[0]
        if root not in TRUTH_ROOTS or value == "metadata":
            raise ValueError(
                f"evaluate.truth {value!r} must be ground_truth, ground_truth.PATH or metadata.PATH"
            )
        return value


class ScoredJob(NamedTuple):
    """One job as the report reads it: its key, status, label and truth (None: missing).

    ``label`` and ``truth`` are the values found at the spec's paths, exactly as stored.
    """

    batch_id: str
    record_id: str
    variant: str
    repeat: int
    status: JobStatus
    label: Any
    truth: Any


class Interval(BaseModel):
    """An estimate with its 95% confidence interval (None where it cannot be computed)."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    method: str = Field(description="How the interval was computed, e.g. wilson, bootstrap.")


class Missing(BaseModel):
    """Jobs not scored, by reason (each job counts under its first reason)."""

    not_finished: int = 0
    failed: int = 0
    no_label: int = 0
    no_truth: int = 0

    @property
    def total(self) -> int:
        return self.not_finished + self.failed + self.no_label + self.no_truth

    def text(self) -> str:
        """``0`` or ``5 (3 failed, 2 no label)``: the total and its split, as every view
        shows it."""
        parts = [
            f"{count} {reason.replace('_', ' ')}"
            for reason in MISSING_REASONS
            if (count := getattr(self, reason))
        ]
        return f"{self.total} ({', '.join(parts)})" if parts else "0"


class ClassScore(BaseModel):
    """Precision, recall and F1 of one class (scikit-learn's, zero_division=0)."""

    label: Any
    precision: float
    recall: float
    f1: float
    support: int = Field(description="Scored jobs whose truth is this class.")


class Confusion(BaseModel):
    """Counts of (truth, label): ``matrix[i][j]`` = truth ``labels[i]``, answer ``labels[j]``."""

    labels: list[Any]
    matrix: list[list[int]]


class Score(BaseModel):
    """One combination's answers (or all of them, or the majority vote) against the truth."""

    batch_id: str | None = Field(description="None for a score over several batches.")
    variant: str = Field(description="The combination's key, 'overall' or 'majority'.")
    axes: dict[str, Any] = Field(default_factory=dict)
    jobs: int
    scored: int
    missing: Missing
    label_counts: list[tuple[Any, int]] = Field(
        default_factory=list, description="(label, scored jobs giving it), most frequent first."
    )
    # nominal and ordinal
    accuracy: Interval | None = None
    macro_f1: float | None = None
    cohen_kappa: float | None = None
    classes: list[ClassScore] = Field(default_factory=list)
    positive: ClassScore | None = None
    confusion: Confusion | None = None
    # interval
    mae: float | None = None
    mae_interval: Interval | None = Field(
        default=None,
        description="MAE with its 95% CI: the t interval of the mean absolute error "
        "(statsmodels DescrStatsW(|answer - truth|).tconfint_mean()); None below 2 jobs.",
    )
    label_histogram: list[tuple[float, float, int]] = Field(
        default_factory=list,
        description="Interval: (low, high, scored jobs) bins of the answers, the same bins "
        "for every score of a report (numpy histogram_bin_edges 'auto', at most 30 bins).",
    )
    rmse: float | None = None
    pearson: Interval | None = None
    spearman: Interval | None = None
    stability: float | None = Field(
        default=None,
        description="Mean over records of the share of this combination's repeats that give "
        "the record's majority label (None with one repeat; None for kind interval, where "
        "answers are numbers and exact agreement means little: see Krippendorff's alpha).",
    )


class Agreement(BaseModel):
    """Agreement among all answers (every combination x repeat is one rater) per record."""

    raters: int
    records: int
    krippendorff_alpha: float | None = Field(description="At the spec's kind's level.")
    fleiss_kappa: float | None = Field(description="Nominal/ordinal only; records rated by all.")
    stability: float | None = Field(
        description="Mean per-record share agreeing with its majority (None for interval)."
    )
    stability_histogram: list[tuple[float, float, int]] = Field(
        default_factory=list, description="(low, high, records) bins of per-record stability."
    )
    majority: Score | None = Field(description="The majority-vote label scored against the truth.")
    notes: list[str] = Field(
        default_factory=list,
        description="Why a figure is None though it could be defined (e.g. alpha over too "
        "many distinct values for the krippendorff package's memory).",
    )


class Comparison(BaseModel):
    """Two combinations on the records both answered: McNemar's exact test on correctness."""

    a: str
    b: str
    records: int
    both_correct: int
    only_a_correct: int
    only_b_correct: int
    neither_correct: int
    difference: Interval = Field(description="Accuracy of a minus accuracy of b.")
    p_value: float | None


class RecordAgreement(BaseModel):
    """One record's answers across combinations and repeats (for the job filters)."""

    batch_id: str
    record_id: str
    truth: Any
    majority: Any
    stability: float | None
    answers: int
    disagrees_with_truth: bool = Field(description="Some answer differs from the truth.")


class Report(BaseModel):
    """Scores of one or several batches of a flow: the CLI's JSON and the API's answer."""

    batch_ids: list[str]
    flow: str
    evaluate: EvaluationSpec
    live: bool = Field(description="Some batch is still running: figures cover jobs so far.")
    jobs: int
    finished: int
    combinations: list[Score]
    overall: Score
    agreement: Agreement | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list,
        description="What the reader must know to trust the figures, e.g. that no finished "
        "job has an output at the label's path (and which paths they have).",
    )
    generated_at: float = Field(description="Unix seconds.")
