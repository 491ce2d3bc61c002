"""One vocabulary: each status concept is one Word enum, shared by the code that produces it and
the code that reads it, with the words JSON and cached entries already hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unirt.capability.table import CASE_STATUSES, CaseStatus
from unirt.evidence.probe import ProbeResult, ProbeStatus
from unirt.plugin.route import RouteOutcome
from unirt.process.isolation import Outcome, OutcomeStatus
from unirt.tools.reduce import FailureKind
from unirt.words import Word

ROOT = Path(__file__).resolve().parent.parent


def test_documented_route_outcomes_come_from_route_outcome() -> None:
    api = (ROOT / "docs" / "python-api.md").read_text()
    line = next(ln for ln in api.splitlines() if "`Session.route`" in ln and "outcome (" in ln)
    listed = re.findall(r"`([^`]+)`", line.split("outcome (", 1)[1].split(")", 1)[0])
    listed = [w for w in listed if not w.startswith("unirt.")]
    assert listed == [o.value for o in RouteOutcome]


@pytest.mark.parametrize("enum, words", [
    (OutcomeStatus, ["ok", "error", "crashed", "timeout", "harness"]),
    (ProbeStatus, ["pass", "fail", "no reference", "error", "crashed", "timeout", "harness"]),
    (CaseStatus, ["pass", "load_fail", "run_fail", "mismatch", "crash", "timeout", "harness",
                  "dynamic_fail", "unverified"]),
    (FailureKind, ["crashed", "error", "timeout", "wrong numbers"]),
])
def test_the_words_stay_those_already_stored(enum: type[Word], words: list[str]) -> None:
    """Tables, cached verdicts and JSON reports hold these words: renaming one is a format
    change, not a refactoring."""
    assert [m.value for m in enum] == words
    assert issubclass(enum, Word)


def test_table_case_statuses_are_the_conformance_words() -> None:
    assert [str(s) for s in CASE_STATUSES] == ["pass", "load_fail", "run_fail", "mismatch",
                                               "crash", "timeout", "harness"]


def test_plain_words_become_members() -> None:
    """A cached entry read back (a plain str) is the enum member, so readers compare members."""
    assert Outcome("timeout").status is OutcomeStatus.TIMEOUT
    result = ProbeResult.from_dict({"backend": "x", "status": "no reference"})
    assert result.status is ProbeStatus.NO_REFERENCE
    assert ProbeResult.from_dict(result.as_dict()).status is ProbeStatus.NO_REFERENCE
    with pytest.raises(ValueError):
        Outcome("crash")  # the conformance word, not an isolated call's


def test_no_bare_status_words_in_the_readers() -> None:
    """Statuses are compared with enum members, never with bare words."""
    pattern = re.compile(r'(status|\["s"\])\s*(==|!=|not in|in)\s*\(?"(pass|fail|crashed|crash|'
                         r'timeout|harness|mismatch|no reference|load_fail|run_fail|ok|error)"')
    offenders = []
    for path in (ROOT / "unirt").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
