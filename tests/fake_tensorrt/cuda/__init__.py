"""Test double of cuda-python's top-level package (tests only)."""
