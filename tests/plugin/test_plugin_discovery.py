"""The entry-point discovery cache (unirt.plugin.discovery): a process finds third-party plugins
without scanning every distribution's metadata when nothing installed changed, and scans again
as soon as something did."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.test_plugins import GOOD_PLUGIN, _install_dist
from unirt.plugin import discovery
from unirt.plugin.registry import Registry


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on ``sys.path`` to install distributions into."""
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    yield tmp_path / "site"
    for mod in [m for m in sys.modules if m.startswith("thirdparty_")]:
        del sys.modules[mod]


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The groups scanned (cache misses), in order."""
    seen: list[str] = []
    real = discovery.scan

    def counting(group: str) -> list[discovery.Found]:
        seen.append(group)
        return real(group)

    monkeypatch.setattr(discovery, "scan", counting)
    return seen


def _files() -> list[Path]:
    from unirt.store.cache import resolve_root

    return sorted((resolve_root() / discovery.DISCOVERY_DIR).glob("*.json"))


def test_a_second_registry_reads_the_cache(site: Path, scans: list[str]) -> None:
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    first = Registry()
    assert scans == ["unirt"] and len(_files()) == 1
    second = Registry()
    assert scans == ["unirt"]  # no second scan
    for reg in (first, second):
        assert reg.records["thirdparty"].source == "unirt_thirdparty"
        assert reg.records["thirdparty"].loaded and "thirdparty" in reg.backends


def test_installing_a_plugin_invalidates_the_cache(site: Path, scans: list[str]) -> None:
    assert "thirdparty" not in Registry().records
    assert "thirdparty" not in Registry().records
    assert scans == ["unirt"]
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})  # a new dist-info on the same sys.path
    reg = Registry()
    assert scans == ["unirt", "unirt"]
    assert reg.records["thirdparty"].loaded and "thirdparty" in reg.backends


def test_uninstalling_and_editing_entry_points_invalidate_it(site: Path,
                                                             scans: list[str]) -> None:
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    assert "thirdparty" in Registry().records
    eps = site / "unirt_thirdparty-1.0.dist-info" / "entry_points.txt"
    eps.write_text("[unirt]\nrenamed_thirdparty = thirdparty_good\n")  # edited in place
    reg = Registry()
    assert "renamed_thirdparty" in reg.records and "thirdparty" not in reg.records
    import shutil

    shutil.rmtree(eps.parent)  # uninstalled
    reg = Registry()
    assert "renamed_thirdparty" not in reg.records
    assert scans == ["unirt"] * 3


def test_a_changed_sys_path_is_another_file(site: Path, scans: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    Registry()
    other = tmp_path / "other-site"
    other.mkdir()
    _install_dist(other, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    monkeypatch.syspath_prepend(str(other))
    assert "thirdparty" in Registry().records
    assert scans == ["unirt", "unirt"] and len(_files()) == 2


def test_a_broken_plugin_fails_alike_from_the_cache(site: Path, scans: list[str]) -> None:
    _install_dist(site, "unirt_broken", {"broken": "thirdparty_broken:plugin"},
                  {"thirdparty_broken": "import engine_that_is_not_installed\n"})
    _install_dist(site, "unirt_noattr", {"noattr": "thirdparty_noattr:missing.attr"},
                  {"thirdparty_noattr": "x = 1\n"})
    scanned, cached = Registry(), Registry()
    assert scans == ["unirt"]
    for name in ("broken", "noattr"):
        assert not cached.records[name].loaded
        assert cached.records[name].error == scanned.records[name].error
        assert cached.records[name].source == scanned.records[name].source
    assert cached.records["broken"].error == ("ModuleNotFoundError: No module named "
                                              "'engine_that_is_not_installed'")
    assert cached.records["noattr"].error.startswith("AttributeError: ")


def test_a_forged_file_is_ignored(site: Path, scans: list[str]) -> None:
    Registry()
    (path,) = _files()
    doc = json.loads(path.read_text())
    # Someone who can write the cache names an importable module that no installed
    # distribution declares (a module file changes nothing the stamp looks at).
    (site / "thirdparty_forged.py").write_text("raise SystemExit('imported')\n")
    doc["entry_points"] = [["forged", "thirdparty_forged", "nobody"]]
    path.write_text(json.dumps(doc))
    reg = Registry()
    assert "forged" not in reg.records and "thirdparty_forged" not in sys.modules
    assert scans == ["unirt", "unirt"]
    assert json.loads(path.read_text())["entry_points"] == []  # written again, signed


def test_an_unwritable_cache_scans_every_time_and_says_nothing(
        site: Path, scans: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(blocker))
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    with caplog.at_level(logging.INFO, logger="unirt"):
        assert "thirdparty" in Registry().records
        assert "thirdparty" in Registry().records
    assert scans == ["unirt", "unirt"]
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_another_distribution_finder_turns_the_cache_off(site: Path, scans: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    class Finder:  # provides distributions from somewhere the stamp cannot see
        def find_spec(self, *args: Any) -> None:
            return None

        def find_distributions(self, *args: Any) -> list[Any]:
            return []

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    Registry()
    Registry()
    assert scans == ["unirt", "unirt"] and _files() == []


def test_values_of_another_form_are_not_kept(site: Path, scans: list[str]) -> None:
    _install_dist(site, "unirt_odd", {"odd": "thirdparty_odd:plugin [extra] trailing"}, {})
    Registry()
    Registry()
    assert scans == ["unirt", "unirt"] and _files() == []


def test_a_fresh_process_with_a_warm_cache_reads_no_distribution_metadata(
        site: Path) -> None:
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    root = Path(__file__).resolve().parents[2]
    code = ("import sys\nfrom unirt.plugin.registry import Registry\nr = Registry()\n"
            "print('thirdparty' in r.backends, 'importlib.metadata' in sys.modules)")
    env_path = [str(site), str(root), str(root / "plugins"), *sys.path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(env_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True, cwd=root).stdout.split() for _ in range(2)]
    assert runs[0] == ["True", "True"]  # scanned, and kept
    assert runs[1] == ["True", "False"]  # found from the cache
