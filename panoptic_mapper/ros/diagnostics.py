"""diagnostic_msgs output of the nodes: one DiagnosticStatus per node with its counters.

Owns: turning counters, problem counts and timings into a ``DiagnosticArray`` (the standard
``/diagnostics`` topic that rqt_robot_monitor and diagnostic aggregators read).
Does not own: what is counted (the nodes, ``panoptic_mapper.runtime.node_stats``).
"""
from __future__ import annotations

from typing import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from panoptic_mapper.ros.conversions import header_msg
from panoptic_mapper.runtime.node_stats import ProblemCounter, RollingTiming

DIAGNOSTICS_TOPIC = "/diagnostics"

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def timing_values(prefix: str, timing: RollingTiming) -> dict[str, str]:
    """``{prefix_mean_ms: ..., prefix_p95_ms: ..., ...}`` of a timing window (empty before use)."""
    summary = timing.summary()
    if summary is None:
        return {f"{prefix}_count": "0"}
    return {f"{prefix}_count": str(timing.total_count),
            f"{prefix}_last_ms": f"{summary.last_ms:.1f}",
            f"{prefix}_mean_ms": f"{summary.mean_ms:.1f}",
            f"{prefix}_median_ms": f"{summary.median_ms:.1f}",
            f"{prefix}_p95_ms": f"{summary.p95_ms:.1f}",
            f"{prefix}_max_ms": f"{summary.max_ms:.1f}"}


def node_status(node_name: str, hardware_id: str, values: Mapping[str, object],
                problems: ProblemCounter | None = None) -> DiagnosticStatus:
    """A status named after the node: WARN when problems were counted, OK otherwise.

    Problem counts appear as ``problem.<kind>`` keys; ``values`` are stringified.
    """
    pairs = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    level, message = OK, "running"
    if problems is not None and problems.total:
        level = WARN
        message = f"input problems: {problems.summary()}"
        pairs += [KeyValue(key=f"problem.{kind}", value=str(count))
                  for kind, count in sorted(problems.counts.items())]
    return DiagnosticStatus(level=level, name=node_name, message=message,
                            hardware_id=hardware_id, values=pairs)


def diagnostic_array(stamp_ns: int, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """Wrap statuses in a stamped ``DiagnosticArray``."""
    return DiagnosticArray(header=header_msg(stamp_ns, ""), status=statuses)
