"""Helpers the tests share: installing a test plugin as a third-party one, and listing the
child processes a test left behind."""

from __future__ import annotations

from pathlib import Path

import pytest


def install_plugin(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install ``tests.<module>`` as a third-party plugin (an entry point in a dist-info on
    ``sys.path``), found by this process and by the children it starts."""
    dist = f"unirt-{module.replace('_', '-')}"
    site = tmp_path / "site"
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[unirt]\n{module} = tests.{module}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))


def live_children() -> set[int]:
    """Pids of this process's live child processes (from /proc: psutil is not a dependency;
    zombies are dead and left out)."""
    import os

    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry))
    return found
