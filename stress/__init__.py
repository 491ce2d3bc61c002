"""Bounded stress scripts for unirt: concurrency, soak, kills. Run from the repository root as
``python -m stress.concurrency`` / ``python -m stress.soak`` / ``python -m stress.kills``."""
