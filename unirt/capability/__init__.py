"""The capability matrix: per (model, backend), a verdict with its reasons and the evidence that
decided it.

Evidence, strongest last: the op-support tables (the ONNX conformance suite run on each engine,
:mod:`.table`) predict per node (:mod:`.features`, :mod:`.judge`) and never refuse a backend on
their own; a backend's rules and the engine's own answer on the model (creating the session,
``query_model``, the conversion) refuse it; a measured run of the model, compared with the
reference, decides for or against (:mod:`.report`, through :mod:`unirt.verify`).

Importing this package stays light (no numpy, onnx or engine): plugins import :class:`Reason`
from it at their own import. The report, which measures, is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .features import (
    ABSENT,
    STANDARD_DOMAINS,
    UNKNOWN_VALUE,
    describe_feature,
    feature_kind,
    node_features,
    op_key,
    schema_since,
)
from .judge import Judgement, check_backend, judge_node, merge_query, settle, table_reasons
from .table import (
    CASE_STATUSES,
    HARNESS,
    PASS,
    TABLE_DIR,
    TABLE_FORMAT,
    CaseStatus,
    OpEvidence,
    OpTable,
    available_tables,
    find_table,
    summarize_table,
    table_dirs,
    version_slug,
)
from .verdict import (
    SUPPORTED,
    UNAVAILABLE,
    UNKNOWN,
    UNSUPPORTED,
    Evidence,
    Reason,
    Status,
    Verdict,
    combine,
)

if TYPE_CHECKING:  # pragma: no cover
    from .report import (
        CapabilityReport,
        apply_measurement,
        capabilities,
        model_summary,
        probe_summary,
    )

_REPORT = ("CapabilityReport", "apply_measurement", "capabilities", "model_summary",
           "probe_summary")

__all__ = [
    "ABSENT",
    "CASE_STATUSES",
    "HARNESS",
    "PASS",
    "STANDARD_DOMAINS",
    "SUPPORTED",
    "TABLE_DIR",
    "TABLE_FORMAT",
    "UNAVAILABLE",
    "UNKNOWN",
    "UNKNOWN_VALUE",
    "UNSUPPORTED",
    "CapabilityReport",
    "CaseStatus",
    "Evidence",
    "Judgement",
    "OpEvidence",
    "OpTable",
    "Reason",
    "Status",
    "Verdict",
    "apply_measurement",
    "available_tables",
    "capabilities",
    "check_backend",
    "combine",
    "describe_feature",
    "feature_kind",
    "find_table",
    "judge_node",
    "merge_query",
    "model_summary",
    "node_features",
    "op_key",
    "probe_summary",
    "schema_since",
    "settle",
    "summarize_table",
    "table_dirs",
    "table_reasons",
    "version_slug",
]


def __getattr__(name: str) -> Any:
    if name in _REPORT:
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
