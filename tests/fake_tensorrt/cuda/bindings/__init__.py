"""Test double of ``cuda.bindings`` (tests only)."""
