"""Evidence: everything that runs an engine on a model in a child process and judges what came back.

Kept light on purpose: ``python -m unirt.process.child`` imports this package in every child.
"""
