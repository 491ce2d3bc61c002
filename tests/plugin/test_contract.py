"""The backend test-kit run against every built-in backend (unavailable ones skip with why)."""

from __future__ import annotations

import pytest

from unirt.plugin.registry import get_registry, set_registry
from unirt.testing.contract import BackendContract


def _builtin_backend_names() -> list[str]:
    previous = set_registry(None)
    try:
        return list(get_registry().backends)
    finally:
        set_registry(previous)


class TestBuiltinBackends(BackendContract):
    @pytest.fixture(params=_builtin_backend_names())
    def backend_name(self, request: pytest.FixtureRequest) -> str:
        return request.param
