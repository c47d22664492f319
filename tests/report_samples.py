"""Reports built by hand from the shared contract (buttermilk/domain/evaluation.py), for
the charts, the HTML report and the pages that draw them."""

from __future__ import annotations

from buttermilk.domain.evaluation import (
    Agreement,
    ClassScore,
    Comparison,
    Confusion,
    EvaluationSpec,
    Interval,
    Missing,
    Report,
    Score,
)
from buttermilk.domain.timeline import TimeBucket, Timeline

HOSTILE = '<script>alert("x")</script>'  # a label that must stay text everywhere


def score(variant: str, accuracy: float, *, batch_id: str | None = "b1") -> Score:
    return Score(
        batch_id=batch_id,
        variant=variant,
        axes={"judge.model": variant},
        jobs=10,
        scored=8,
        missing=Missing(failed=1, no_label=1),
        label_counts=[("pos", 5), (HOSTILE, 3)],
        accuracy=Interval(
            estimate=accuracy, low=accuracy - 0.2, high=min(accuracy + 0.1, 1), method="wilson"
        ),
        macro_f1=0.7,
        cohen_kappa=0.4,
        classes=[
            ClassScore(label="pos", precision=0.8, recall=0.9, f1=0.85, support=5),
            ClassScore(label=HOSTILE, precision=0.6, recall=0.5, f1=0.55, support=3),
        ],
        confusion=Confusion(labels=["pos", HOSTILE], matrix=[[4, 1], [1, 2]]),
        stability=0.9,
    )


def sample_report(kind: str = "nominal") -> Report:
    """Two combinations of one batch, with agreement and a comparison."""
    a, b = score("a", 0.75), score("b", 0.5)
    overall = score("overall", 0.625).model_copy(update={"jobs": 20, "scored": 16, "axes": {}})
    if kind == "interval":
        a = a.model_copy(update={"accuracy": None, "confusion": None, "mae": 0.3, "rmse": 0.4})
        b = b.model_copy(update={"accuracy": None, "confusion": None, "mae": 0.6, "rmse": 0.7})
    return Report(
        batch_ids=["b1"],
        flow="judge",
        evaluate=EvaluationSpec(label="judge.label", kind=kind),  # type: ignore[arg-type]
        live=False,
        jobs=20,
        finished=20,
        combinations=[a, b],
        overall=overall,
        agreement=Agreement(
            raters=2,
            records=10,
            krippendorff_alpha=0.41,
            fleiss_kappa=0.39,
            stability=0.8,
            stability_histogram=[(0.5, 0.75, 4), (0.75, 1.0, 6)],
            majority=score("majority", 0.7),
            notes=["alpha <left out> for the test"],
        ),
        comparisons=[
            Comparison(
                a="a",
                b="b",
                records=8,
                both_correct=3,
                only_a_correct=3,
                only_b_correct=1,
                neither_correct=1,
                difference=Interval(estimate=0.25, low=-0.1, high=0.6, method="paired t"),
                p_value=0.625,
            )
        ],
        generated_at=1_700_000_000.0,
    )


def sample_timeline() -> Timeline:
    return Timeline(
        batch_id="b1",
        bucket_seconds=1.0,
        buckets=[
            TimeBucket(start=1_700_000_000.0, completed=3, failed=1, cost=0.01),
            TimeBucket(start=1_700_000_002.0, completed=5, cost=0.02),
        ],
    )
