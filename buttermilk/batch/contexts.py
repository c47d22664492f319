"""What a worker keeps per batch: its info, slots, and each combination's flow runner.

A batch's agents are built once per (batch, combination), when the worker first runs a
job of that combination, not once per job.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio

from buttermilk.domain import BatchInfo
from buttermilk.domain.variants import Combination
from buttermilk.errors import ButtermilkError, UsageError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner, merge_parameters
from buttermilk.flows.variants import flow_for
from buttermilk.llm.endpoints import Endpoint, flow_endpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantRunner:
    """A combination's runner and parameters, or why it cannot run (then runner is None)."""

    runner: FlowRunner | None
    parameters: dict[str, Any]
    error: BaseException | None = None


@dataclass
class BatchContext:
    """One batch as a worker runs it."""

    info: BatchInfo
    flow: FlowConfig | None
    load_error: BaseException | None
    limiter: anyio.CapacityLimiter
    combinations: dict[str, Combination] = field(default_factory=dict)
    _runners: dict[str, VariantRunner] = field(default_factory=dict)
    _building: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, info: BatchInfo, concurrency: int) -> BatchContext:
        """The batch's context; a batch whose flow cannot be read keeps the error, and its
        jobs fail with it."""
        flow: FlowConfig | None = None
        error: BaseException | None = None
        try:
            if info.request_error:  # run with defaults, it would not be the batch asked for
                raise ButtermilkError(info.request_error)
            flow = FlowConfig.model_validate(info.flow_snapshot)
        except Exception as exc:
            log.error("batch %s: cannot set up its flow: %s", info.id, exc)
            error = exc
        limit = min(info.request.concurrency, concurrency)
        combinations = {c.key: c for c in info.combinations()}
        return cls(info, flow, error, anyio.CapacityLimiter(limit), combinations)

    def endpoints(self) -> list[Endpoint]:
        """The LLM endpoints the batch's combinations call (none when its flow cannot be
        set up: its jobs fail with that)."""
        if self.flow is None:
            return []
        try:
            return flow_endpoints(self.flow, self.combinations.values())
        except Exception:
            return []

    def built(self, variant: str) -> VariantRunner | None:
        """The runner of one combination if it is built already (no thread needed)."""
        return self._runners.get(variant)

    def runner_for(self, variant: str) -> VariantRunner:
        """The runner of one combination (by key), built on first use (call in a thread:
        building agents may do I/O). Jobs starting together wait for one build."""
        with self._building:
            found = self._runners.get(variant)
            if found is None:
                found = self._build(variant)
                self._runners[variant] = found
            return found

    def _build(self, variant: str) -> VariantRunner:
        try:
            if self.load_error is not None:
                raise self.load_error
            combination = self.combinations.get(variant)
            if combination is None:
                raise UsageError(f"batch {self.info.id} has no combination {variant!r}")
            assert self.flow is not None
            flow = flow_for(self.flow, combination)
            params = merge_parameters(flow.parameters, self.info.request.parameters)
            return VariantRunner(FlowRunner(flow), params)
        except Exception as exc:
            if exc is not self.load_error:
                log.error("batch %s, %s: cannot set up its flow: %s", self.info.id, variant, exc)
            return VariantRunner(None, {}, exc)
