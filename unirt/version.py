"""The version of unirt, in a module of its own so that any layer can name it without importing
the public API (which reaches every layer)."""

__version__ = "0.1.0"
