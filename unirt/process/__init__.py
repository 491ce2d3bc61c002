"""Running work in child processes: the harness every layer uses (a fresh interpreter per child,
time-outs, crash reports) and how busy the machine is. Kept light: every child imports it."""
