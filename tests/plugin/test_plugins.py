"""The plugin system: built-ins and entry points registered alike; broken plugins reported."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import unirt
from tests.fakes import FakePlugin, Working
from unirt.errors import BackendNotFoundError, PluginError, UnirtError
from unirt.plugin.backend import OptionSpec
from unirt.plugin.registry import BUILTIN_PLUGINS, Registry


def _install_dist(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]):
    """Write a minimal installed distribution (dist-info with entry points) into ``site``."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[unirt]\n{eps}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("thirdparty_")]:
        del sys.modules[mod]


GOOD_PLUGIN = """
    import unirt
    from tests.fakes import Working

    class ThirdParty(Working):
        name = "thirdparty"

    @unirt.hookimpl
    def register_backends(register):
        register(ThirdParty)
"""


def test_builtins_come_from_the_tuple() -> None:
    reg = Registry(entry_points=False)
    assert [r.name for r in reg.records.values()] == list(BUILTIN_PLUGINS)
    assert all(r.source == "builtin" for r in reg.records.values())
    assert "onnxruntime" in reg.backends
    assert reg.records["unirt_onnxruntime"].backends == ["onnxruntime", "onnxruntime-cuda"]


def test_entry_point_plugin_is_registered(site: Path) -> None:
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    reg = Registry()
    assert reg.records["thirdparty"].source == "unirt_thirdparty"
    assert reg.records["thirdparty"].loaded
    assert "thirdparty" in reg.backends


def test_broken_entry_point_is_reported_not_raised(site: Path) -> None:
    _install_dist(site, "unirt_broken", {"broken": "thirdparty_broken"},
                  {"thirdparty_broken": "import engine_that_is_not_installed\n"})
    reg = Registry()
    rec = reg.records["broken"]
    assert not rec.loaded
    assert rec.error == "ModuleNotFoundError: No module named 'engine_that_is_not_installed'"
    assert "onnxruntime" in reg.backends  # the others still work
    statuses = {s.name for s in unirt.backends(reg)}
    assert "onnxruntime" in statuses


def test_disable_plugins_env(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_dist(site, "unirt_thirdparty", {"thirdparty": "thirdparty_good"},
                  {"thirdparty_good": GOOD_PLUGIN})
    monkeypatch.setenv("UNIRT_DISABLE_PLUGINS", "thirdparty, unirt_onnxruntime")
    reg = Registry()
    assert reg.records["thirdparty"].disabled and reg.records["unirt_onnxruntime"].disabled
    assert "thirdparty" not in reg.backends and "onnxruntime" not in reg.backends
    with pytest.raises(BackendNotFoundError, match="unknown backend 'onnxruntime'"):
        reg.backend("onnxruntime")


def test_duplicate_backend_names() -> None:
    reg = Registry(builtins=(), entry_points=False)
    reg.register(FakePlugin(Working), "one")
    reg.register(FakePlugin(Working), "two")
    with pytest.raises(PluginError, match="'fake-working', which another plugin already"):
        reg.backends  # noqa: B018


def test_registering_a_non_backend() -> None:
    class Bad:
        @unirt.hookimpl
        def register_backends(self, register):
            register(object())

    reg = Registry(builtins=(), entry_points=False)
    reg.register(Bad(), "bad")
    with pytest.raises(PluginError, match="plugin bad registered <object .*not a unirt Backend"):
        reg.backends  # noqa: B018


def test_register_backends_raising_is_recorded() -> None:
    class Exploding:
        @unirt.hookimpl
        def register_backends(self, register):
            raise RuntimeError("boom")

    reg = Registry(builtins=(), entry_points=False)
    reg.register(Exploding(), "exploding")
    reg.register(FakePlugin(Working), "fine")
    assert list(reg.backends) == ["fake-working"]
    assert reg.records["exploding"].error == "register_backends: RuntimeError: boom"


def test_backends_reports_reason_and_install_hint() -> None:
    reg = Registry(builtins=("unirt_onnxruntime",), entry_points=False)
    by_name = {s.name: s for s in unirt.backends(reg)}
    ort = by_name["onnxruntime"]
    assert ort.available and ort.version and ort.devices == ("cpu",) and ort.install_hint is None
    assert ort.plugin == "unirt_onnxruntime"
    cuda = by_name["onnxruntime-cuda"]
    if not cuda.available:
        assert cuda.reason and "unirt[cuda]" in cuda.install_hint


def test_fresh_registry_per_test_is_isolated() -> None:
    a, b = Registry(builtins=(), entry_points=False), Registry(builtins=(), entry_points=False)
    a.register(FakePlugin(Working), "fakes")
    assert "fake-working" in a.backends and "fake-working" not in b.backends


def test_the_core_names_no_backend_except_the_builtin_tuple() -> None:
    """DESIGN: apart from BUILTIN_PLUGINS, nothing in unirt/ names a backend (docstrings and
    comments may, as examples); the reference is found by Backend.is_reference."""
    import ast

    import unirt as pkg

    names = set(Registry(entry_points=False).backends) | set(BUILTIN_PLUGINS)
    root = Path(pkg.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "testing" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                        ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)
                      and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and node.value in names
                    and not (path.name == "registry.py" and node.value in BUILTIN_PLUGINS)):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_builtin_backends_are_listed_in_registration_order() -> None:
    """Hooks run last-registered first (pluggy); what they register is listed in
    BUILTIN_PLUGINS order, each plugin's backends in the order it registered them."""
    reg = Registry(entry_points=False)
    by_plugin = [reg.records[p].backends for p in BUILTIN_PLUGINS]
    assert list(reg.backends) == [b for names in by_plugin for b in names]
    assert list(reg.backends)[:2] == ["onnxruntime", "onnxruntime-cuda"]
    assert [s.name for s in unirt.backends(reg)] == list(reg.backends)


def _named(name: str, calls: list[str]) -> type:
    class Named(Working):
        pass

    Named.name = name

    class Plugin:
        @unirt.hookimpl
        def register_backends(self, register):
            calls.append(name)
            register(Named)

    return Plugin


def test_documented_call_order_is_the_observed_order() -> None:
    """hookspecs.py: the last registered plugin's implementation runs first; tryfirst and
    trylast move one to the front or back; the listing stays in registration order."""
    calls: list[str] = []
    reg = Registry(builtins=(), entry_points=False)
    for name in ("a", "b", "c"):
        reg.register(_named(name, calls)(), name)

    class First:
        @unirt.hookimpl(trylast=True)
        def register_backends(self, register):
            calls.append("last")

    reg.register(First(), "trylast")
    assert list(reg.backends) == ["a", "b", "c"]
    assert calls == ["c", "b", "a", "last"]
    assert [n for n, _ in reg.hook_calls("register_backends")] == ["c", "b", "a", "trylast"]
    doc = (Path(unirt.__file__).parent / "plugin" / "hookspecs.py").read_text()
    assert "last-registered plugin first" in doc
    guide = (Path(unirt.__file__).parent.parent / "docs" / "plugins.md").read_text()
    assert "the last registered plugin's implementation runs first" in guide


def test_a_wrapper_implementation_is_honoured() -> None:
    """wrapper=True and hookwrapper=True implementations wrap each plugin's call (called as
    plain functions, their bodies would never run)."""
    events: list[str] = []

    class NewStyle:
        @unirt.hookimpl(wrapper=True)
        def register_backends(self, register):
            events.append("new: before")
            result = yield
            events.append("new: after")
            return result

    class OldStyle:
        @unirt.hookimpl(hookwrapper=True)
        def on_fallback(self, model, step, next_backend):
            events.append(f"old: before {next_backend}")
            yield
            events.append("old: after")

    class Observer:
        @unirt.hookimpl
        def on_fallback(self, model, step, next_backend):
            events.append("observed")

    reg = Registry(builtins=(), entry_points=False)
    reg.register(FakePlugin(Working), "fakes")
    reg.register(NewStyle(), "new")
    reg.register(OldStyle(), "old")
    reg.register(Observer(), "observer")
    assert list(reg.backends) == ["fake-working"]
    assert events == ["new: before", "new: after"]
    events.clear()
    reg.call_hook_safely("on_fallback", model=None, step=None, next_backend="x")
    assert events == ["old: before x", "observed", "old: after"]


def test_a_hook_with_only_a_wrapper_still_runs_it() -> None:
    events: list[str] = []

    class OnlyWrapper:
        @unirt.hookimpl(wrapper=True)
        def on_fallback(self, model, step, next_backend):
            events.append("wrapped")
            return (yield)

    reg = Registry(builtins=(), entry_points=False)
    reg.register(OnlyWrapper(), "only")
    reg.call_hook_safely("on_fallback", model=None, step=None, next_backend=None)
    assert events == ["wrapped"]


def test_pluggy_tracing_sees_hook_calls() -> None:
    seen: list[str] = []
    reg = Registry(builtins=(), entry_points=False)
    reg.register(FakePlugin(Working), "fakes")
    undo = reg.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append(name), lambda *a: None)
    try:
        reg.backends  # noqa: B018
    finally:
        undo()
    assert seen == ["register_backends"]


def test_impl_methods_are_called_only_by_the_backend_base_class() -> None:
    """Polygraphy's check_called_by rule, as a grep (datasette style): a backend's ``_..._impl``
    methods are called by ``unirt.plugin.backend.Backend``'s public methods only (a plugin's
    override may call ``super()``'s); everything else calls ``available()``, ``open()``,
    ``query()``, ``rules()``, ``host_outputs()``."""
    import re

    root = Path(unirt.__file__).resolve().parent.parent
    call = re.compile(r"(?<!super\(\))\.(_[a-z_]+_impl)\(")
    offenders = []
    for folder in ("unirt", "plugins", "tests"):
        for path in (root / folder).rglob("*.py"):
            if path == root / "unirt" / "plugin" / "backend.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if call.search(line) and "def _" not in line:
                    offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_public_rules_and_host_outputs_check_what_a_plugin_returns() -> None:
    from unirt.model.info import read_model
    from unirt.testing import models as M

    class BadRules(Working):
        name = "bad-rules"

        def _rules_impl(self, model):
            return ["not a Reason"]

        def _host_outputs_impl(self, model):
            return {3}

    info = read_model(M.add())
    with pytest.raises(PluginError, match="bad-rules: _rules_impl returned 'not a Reason'"):
        BadRules().rules(info)
    with pytest.raises(PluginError, match="bad-rules: _host_outputs_impl returned 3"):
        BadRules().host_outputs(info)
    assert Working().rules(info) == [] and Working().host_outputs(info) == set()


class _Opts(Working):
    name = "fake-opts"
    options = {
        "mode": OptionSpec.choice("fast or slow", ("fast", "slow")),
        "limit": OptionSpec.number("seconds"),
        "config": OptionSpec.mapping("raw properties", "a dict of properties"),
        "free": OptionSpec("anything"),
    }

    def _open_impl(self, model, options):
        self.opened = dict(options.extra)
        return super()._open_impl(model, options)

    def _query_impl(self, model, options):
        return set()


@pytest.mark.parametrize("extra, match", [
    ({"bogus": 1}, "unknown fake-opts option 'bogus'; known: mode, limit, config, free"),
    ({"mode": "turbo"}, "fake-opts option mode must be one of fast, slow, not 'turbo'"),
    ({"limit": "long"}, "fake-opts option limit must be a non-negative number, not 'long'"),
    ({"limit": -1}, "fake-opts option limit must be a non-negative number, not -1"),
    ({"limit": True}, "fake-opts option limit must be a non-negative number, not True"),
    ({"config": [1]}, r"fake-opts option config must be a dict of properties, not \[1\]"),
], ids=["unknown", "choice", "number-text", "negative", "bool", "mapping"])
def test_declared_options_are_refused_before_the_engine_sees_them(extra, match) -> None:
    """One message format for every backend; ``query`` refuses what ``open`` refuses."""
    from unirt.model.info import read_model
    from unirt.plugin.backend import OpenOptions
    from unirt.testing import models as M

    info = read_model(M.add())
    backend = _Opts()
    with pytest.raises(UnirtError, match=match):
        backend.open(info, OpenOptions(extra=extra))
    with pytest.raises(UnirtError, match=match):
        backend.query(info, OpenOptions(extra=extra))
    assert not hasattr(backend, "opened")


def test_declared_options_pass_through_as_given() -> None:
    from unirt.model.info import read_model
    from unirt.plugin.backend import OpenOptions
    from unirt.testing import models as M

    info = read_model(M.add())
    extra = {"mode": " FAST ", "limit": 2.5, "config": {"A": 1}, "free": object(), "limit2": None}
    backend = _Opts()
    with pytest.raises(UnirtError, match="unknown fake-opts option 'limit2'"):
        backend.open(info, OpenOptions(extra=extra))
    del extra["limit2"]
    backend.open(info, OpenOptions(extra={**extra, "mode": None})).close()
    backend.open(info, OpenOptions(extra=extra)).close()
    assert backend.opened == extra  # validated, not rewritten: the plugin reads its own values
    # A backend that declares no options takes whatever it is given, as before.
    Working().open(info, OpenOptions(extra={"anything": 1})).close()


def test_builtin_backends_declare_their_options_and_check_none_themselves() -> None:
    """Every built-in backend declares its options (``Backend.options``) and leaves refusing an
    unknown one to the base class: no plugin words that message itself."""
    reg = Registry(entry_points=False)
    for name, backend in reg.backends.items():
        assert backend.options, name
        assert all(isinstance(spec, OptionSpec) for spec in backend.options.values()), name
    root = Path(unirt.__file__).resolve().parent.parent / "plugins"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "option {" in p.read_text() and "unknown" in p.read_text()
                 and "; known:" in p.read_text()]
    assert not offenders, offenders


def test_open_refuses_what_check_refuses() -> None:
    """A plugin states a refusal once (``_refusals_impl``): ``open`` refuses the first before
    ``_open_impl``, ``rules`` (hence ``check``) lists them all, with its own rules after."""
    from unirt.capability.verdict import UNSUPPORTED, Reason
    from unirt.errors import BackendError
    from unirt.model.info import read_model
    from unirt.plugin.backend import OpenOptions
    from unirt.testing import models as M

    class NoInputs(Working):
        name = "fake-no-inputs"

        def _refusals_impl(self, model):
            return [Reason(f"{what} {info.name!r} is refused", "input")
                    for what, info in model.io() if what == "input"]

        def _rules_impl(self, model):
            return [Reason("a rule of its own")]

        def _open_impl(self, model, options):
            pytest.fail("opened what it refuses")

    info = read_model(M.add())
    backend = NoInputs()
    first, second = (t.name for t in info.inputs)
    with pytest.raises(BackendError, match=rf"^fake-no-inputs cannot run <in-memory model>: "
                                           rf"input '{first}' is refused$"):
        backend.open(info, OpenOptions())
    assert [r.message for r in backend.rules(info)] == [
        f"input '{first}' is refused", f"input '{second}' is refused", "a rule of its own"]
    assert backend.check(info).status == UNSUPPORTED

    class BadRefusal(Working):
        name = "bad-refusal"

        def _refusals_impl(self, model):
            return ["no"]

    with pytest.raises(PluginError, match="bad-refusal: _refusals_impl returned 'no'"):
        BadRefusal().rules(info)


def test_device_names_map_load_devices_and_refuse_the_rest() -> None:
    from unirt.errors import BackendUnavailableError
    from unirt.plugin.backend import OpenOptions

    class CpuOnly(Working):
        name = "fake-cpu-only"
        device_names = {"auto": "CPU0", "cpu": "CPU0"}
        device_hint = "it runs on the CPU"

    backend = CpuOnly()
    assert backend.device_name(OpenOptions(device="auto")) == "CPU0"
    for device in ("cuda", "gpu"):
        with pytest.raises(BackendUnavailableError, match=rf"^fake-cpu-only cannot run on "
                                                          rf"'{device}': it runs on the CPU "
                                                          r"\(devices here: cpu\)$"):
            backend.device_name(OpenOptions(device=device))
    # Not declared: the device word passes through, the backend decides.
    assert Working().device_name(OpenOptions(device="gpu")) == "gpu"


@pytest.mark.parametrize("backend, device, match", [
    ("ncnn", "cuda", "ncnn cannot run on 'cuda': it runs on the CPU or on a Vulkan GPU"),
    ("ncnn-vulkan", "cuda", "ncnn-vulkan cannot run on 'cuda': it runs on a Vulkan GPU"),
    ("tensorrt", "cpu", "tensorrt cannot run on 'cpu': it runs on a CUDA GPU"),
    ("openvino", "cuda", "openvino cannot run on 'cuda': OpenVINO's GPU device is an Intel"),
])
def test_builtin_backends_refuse_a_device_in_one_format(backend, device, match) -> None:
    from unirt.errors import BackendUnavailableError
    from unirt.plugin.backend import OpenOptions

    be = Registry(entry_points=False).backends[backend]
    with pytest.raises(BackendUnavailableError, match=match):
        be.device_name(OpenOptions(device=device))


def test_plugins_import_contract_modules_not_the_top_level_package() -> None:
    """A plugin imports the modules of the contract it uses (unirt.plugin.backend, unirt.errors,
    unirt.plugin.hookspecs, ...), never ``unirt`` itself: its lazy top-level names are for users."""
    import ast

    root = Path(unirt.__file__).resolve().parent.parent / "plugins"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                              if a.name == "unirt"]
            elif isinstance(node, ast.ImportFrom) and node.module == "unirt":
                offenders.append(f"{path.name}:{node.lineno}: from unirt import "
                                 + ", ".join(a.name for a in node.names))
    assert not offenders, offenders


def test_register_rewrites_hook_adds_rewrites_in_registration_order() -> None:
    """A third-party plugin's rewrites come after the built-ins' (registration order), are
    recorded on its PluginRecord, and a plugin whose hook raises is recorded, not fatal."""
    from unirt.plugin.rewrite import Rewrite

    class Mine(Rewrite):
        name = "mine"
        summary = "does nothing"

        def apply(self, model, context):
            return []

    class Plugin:
        @unirt.hookimpl
        def register_rewrites(self, register):
            register(Mine)

    class Broken:
        @unirt.hookimpl
        def register_rewrites(self, register):
            raise RuntimeError("no rewrites today")

    reg = Registry(("unirt.rewrite.builtin",), entry_points=False)
    reg.register(Plugin(), "mine-plugin")
    reg.register(Broken(), "broken")
    assert list(reg.rewrites)[-1] == "mine" and isinstance(reg.rewrite("mine"), Mine)
    assert list(reg.rewrites)[:-1] == reg.records["unirt.rewrite.builtin"].rewrites
    assert reg.records["mine-plugin"].rewrites == ["mine"]
    assert reg.records["broken"].error == "register_rewrites: RuntimeError: no rewrites today"
