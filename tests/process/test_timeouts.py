"""The one time-out policy: every bound in one table, overridable where documented, and a bad
override is a clear error naming the variable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unirt.errors import UnirtError
from unirt.process import timeouts


def _waits() -> list[timeouts.Wait]:
    return [v for v in vars(timeouts).values() if isinstance(v, timeouts.Wait)]


def test_every_wait_is_bounded_and_described() -> None:
    waits = _waits()
    assert len(waits) >= 8
    for w in waits:
        assert 0 < w.seconds < math.inf and w.what


@pytest.mark.parametrize("wait", [w for w in _waits() if w.env])
def test_an_override_wins_and_a_bad_one_names_the_variable(wait: timeouts.Wait,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert wait.env is not None
    monkeypatch.delenv(wait.env, raising=False)
    assert timeouts.seconds(wait) == wait.seconds
    monkeypatch.setenv(wait.env, "7.5")
    assert timeouts.seconds(wait) == 7.5
    for bad in ("0", "-3", "soon", "nan", "inf"):
        monkeypatch.setenv(wait.env, bad)
        with pytest.raises(UnirtError, match=wait.env):
            timeouts.seconds(wait)


ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=12)


@given(ENV_TEXT)
def test_any_text_is_a_bound_or_a_clear_error(text: str) -> None:
    import os

    env = "UNIRT_TEST_TIMEOUT_FUZZ"
    wait = timeouts.Wait(5.0, env, "a test wait")
    os.environ[env] = text
    try:
        try:
            value = timeouts.seconds(wait)
        except UnirtError as exc:
            assert env in str(exc)
        else:
            assert 0 < value < math.inf
    finally:
        del os.environ[env]
