"""Running a plan: its kind's runner, looked up in `gateway.plans.KINDS` (one dict lookup)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from gateway import plans
from gateway.executor.deadline import Deadline
from gateway.executor.result import Result
from gateway.executor.upstreams import Upstreams

if TYPE_CHECKING:
    from gateway.plans import Plan


async def run(up: Upstreams, plan: Plan, body: dict[str, Any], span: Span | None, deadline: Deadline) -> Result:
    return await plans.KINDS[type(plan)].run(up, plan, body, span, deadline)
