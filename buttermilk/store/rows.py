"""Rows of the store's tables as the domain's models."""

from __future__ import annotations

from sqlalchemy import RowMapping

from buttermilk.domain import BatchInfo, BatchRequest, BatchStatus, JobInfo, JobStatus
from buttermilk.records import Record


def batch_info(row: RowMapping) -> BatchInfo:
    """Every read of a batch row goes through here. It never fails on a stored request
    this version refuses: that one batch shows its problem, and the others still read."""
    request, problem = BatchRequest.from_stored(row["request"], row["flow"])
    error = row["error"]
    if problem:
        error = f"{error}; {problem}" if error else problem
    return BatchInfo(
        id=row["id"],
        flow=row["flow"],
        status=BatchStatus(row["status"]),
        request=request,
        request_error=problem,
        stored_request=row["request"] if problem and isinstance(row["request"], dict) else None,
        flow_snapshot=row["flow_snapshot"],
        total=row["total"],
        seed=row["seed"],
        published=row["published"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=error,
        cost=row.get("cost"),
        input_tokens=row.get("input_tokens") or 0,
        output_tokens=row.get("output_tokens") or 0,
        cached_input_tokens=row.get("cached_input_tokens") or 0,
        reasoning_tokens=row.get("reasoning_tokens") or 0,
        schema_retry_calls=row.get("schema_retry_calls") or 0,
        schema_retry_input_tokens=row.get("schema_retry_input_tokens") or 0,
        schema_retry_output_tokens=row.get("schema_retry_output_tokens") or 0,
        schema_retry_cost=row.get("schema_retry_cost"),
        max_job_cost=row.get("max_job_cost"),
    )


def job_info(row: RowMapping, *, with_record: bool = True) -> JobInfo:
    return JobInfo(
        batch_id=row["batch_id"],
        record_id=row["record_id"],
        variant=row["variant"],
        repeat=row["repeat"],
        seq=row["seq"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        worker=row["worker"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=row["duration"],
        result=row["result"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        traceback=row["traceback"],
        record=Record.model_validate(row["record"]) if with_record else None,
        cost=row["cost"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )
