"""Static prediction: what the op-support tables and a backend's rules say about a model, before
anything runs.

The tables (the ONNX conformance suite run on each engine, :mod:`.table`) predict per node
(:mod:`.features`, :mod:`.judge`) and never refuse a backend on their own: they explain and
order. What decides is evidence (:mod:`unirt.evidence`): the engine's own answer and a measured
run compared with the reference. The verdict types live in :mod:`unirt.capability.verdict`, because
plugins return them; the report that measures is :mod:`unirt.tools.capability_report`.

Importing this package stays light (no numpy, onnx or engine).
"""

from __future__ import annotations

from unirt.capability.features import (
    ABSENT,
    STANDARD_DOMAINS,
    UNKNOWN_VALUE,
    describe_feature,
    feature_kind,
    node_features,
    op_key,
    schema_since,
)
from unirt.capability.judge import (
    Judgement,
    check_backend,
    judge_node,
    merge_query,
    settle,
    table_reasons,
)
from unirt.capability.table import (
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

__all__ = [
    "ABSENT",
    "CASE_STATUSES",
    "HARNESS",
    "PASS",
    "STANDARD_DOMAINS",
    "TABLE_DIR",
    "TABLE_FORMAT",
    "TYPE_CHECKING",
    "UNKNOWN_VALUE",
    "Any",
    "CaseStatus",
    "Judgement",
    "OpEvidence",
    "OpTable",
    "annotations",
    "available_tables",
    "check_backend",
    "describe_feature",
    "feature_kind",
    "find_table",
    "judge_node",
    "merge_query",
    "node_features",
    "op_key",
    "schema_since",
    "settle",
    "summarize_table",
    "table_dirs",
    "table_reasons",
    "version_slug",
]
