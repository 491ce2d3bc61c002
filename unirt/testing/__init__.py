"""Helpers for testing unirt and backend plugins: model builders and the backend test-kit."""
