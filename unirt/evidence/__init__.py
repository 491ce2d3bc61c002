"""Evidence: everything that runs an engine on a model in a child process and judges what came back.

Kept light on purpose: ``python -m unirt.process.child`` imports this package in every child.
"""

#: The cache section of rankings and tuned operating points (:mod:`unirt.evidence.timing`), named
#: here so that a load can see that nothing was ever tuned without importing that module.
TIMING_SECTION = "fastest"
