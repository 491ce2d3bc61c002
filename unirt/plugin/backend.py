"""The base classes a backend plugin implements: :class:`Backend` and :class:`BackendSession`.

Modelled on Polygraphy's runners: the public methods (``available``, ``open``) check state and
turn engine exceptions into :class:`~unirt.errors.UnirtError` subclasses that name the backend,
then call the backend's ``_available_impl`` / ``_open_impl``. A plugin writes only the ``_impl``
methods and never imports its engine at module import time, so ``import unirt`` stays engine-free.

Feeds reach :meth:`BackendSession.run` already validated by the core
:class:`~unirt.runtime.session.Session` (names, dtypes, ranks, static dims, C-contiguous), so a
backend's ``run`` is the engine call and nothing else.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from unirt.errors import BackendError, BackendUnavailableError, PluginError, UnirtError, first_line

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from unirt.capability.verdict import Reason, Verdict
    from unirt.model.info import ModelInfo

logger = logging.getLogger("unirt")

PRECISIONS = ("exact", "fast")
#: ``load(verify=...)``: measure unless cached, always measure, never measure.
VERIFY_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and if not, why and how to fix it."""

    available: bool
    version: str | None = None
    devices: tuple[str, ...] = ()
    reason: str | None = None
    install_hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available, "version": self.version, "devices": list(self.devices),
            "reason": self.reason, "install_hint": self.install_hint,
        }


@dataclass(frozen=True)
class OpenOptions:
    """What the user asked for when opening a model, as every backend receives it.

    ``precision``: ``"exact"`` pins float32 arithmetic as the model declares it (engines that
    default to bf16/fp16 must be told otherwise); ``"fast"`` lets the engine use its reduced
    precision defaults. ``threads``: intra-op threads, ``None`` for the engine default.
    ``extra``: backend-specific options passed through from ``load(options={name: {...}})``.
    ``input_shapes``: ``load(input_shapes=...)``, the shapes the caller will feed; engines that
    build for fixed shape ranges (TensorRT's optimization profiles) build for these at open.
    """

    precision: str = "exact"
    threads: int | None = None
    device: str = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)
    input_shapes: Mapping[str, Any] = field(default_factory=dict)


def _non_negative_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


@dataclass(frozen=True)
class OptionSpec:
    """One option a backend takes in ``load(options={backend: {...}})``.

    Declared, so that every backend refuses an unknown or malformed option the same way and
    in the same words, before its engine sees it (:meth:`Backend.validate_options`), and a
    plugin keeps only what is engine-specific. ``help`` says what the option accepts, in the
    words the user reads; ``choices`` are the accepted values (compared without case or
    surrounding blanks); ``valid`` a test of the value and ``must`` what it wants, for
    "``<backend> option <key> must be <must>, not <value>``". A value of ``None`` counts as not
    given.
    """

    help: str
    choices: tuple[str, ...] = ()
    valid: Callable[[Any], bool] | None = None
    must: str = ""

    @classmethod
    def choice(cls, help: str, choices: Sequence[str]) -> OptionSpec:
        return cls(help, choices=tuple(choices))

    @classmethod
    def number(cls, help: str) -> OptionSpec:
        """An int or float, zero or more (not a bool, not a string)."""
        return cls(help, valid=_non_negative_number, must="a non-negative number")

    @classmethod
    def mapping(cls, help: str, must: str) -> OptionSpec:
        return cls(help, valid=lambda v: isinstance(v, Mapping), must=must)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be ..., not ..."), or ``None``."""
        if value is None:
            return None
        if self.choices:
            if str(value).strip().lower() in {c.lower() for c in self.choices}:
                return None
            return f"must be one of {', '.join(self.choices)}, not {value!r}"
        if self.valid is not None and not self.valid(value):
            return f"must be {self.must}, not {value!r}"
        return None


class BackendSession(ABC):
    """A model opened on an engine. Created by :meth:`Backend.open`, owned by a ``Session``."""

    #: Facts about how the engine actually runs the model (providers, device...), shown by
    #: ``Session.explain()``. Filled by the backend. ``details["convert_s"]``, where present, is
    #: the seconds this session has spent converting or compiling the model so far (ncnn's pnnx
    #: conversions, OpenVINO's compile): ``unirt bench`` shows it apart from the load, because a
    #: conversion may happen at the first run at a shape rather than at load.
    details: dict[str, Any]
    #: The precision the engine actually computes in (``"fp32"``, ``"bf16"``, ``"fp16"``...),
    #: read back from the engine where it can say, not copied from what was asked.
    precision: str

    def __init__(self) -> None:
        self.details = {}
        self.precision = "fp32"

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> Sequence[Any]:
        """Run validated feeds; return one array per name in ``output_names``, in that order."""

    def close(self) -> None:  # noqa: B027 - optional for backends that hold nothing to free
        """Release the engine's resources. Called once by ``Session.close()``."""


class Backend(ABC):
    """One engine (and device) that can run ONNX models.

    Class attributes describe the backend without importing its engine, so the CLI can list and
    filter backends cheaply (the llm style of capabilities as attributes).
    """

    #: The name users pass as ``backend=`` / ``prefer=``: ``"onnxruntime"``, ``"openvino"``...
    name: ClassVar[str]
    #: One line for ``unirt backends``.
    description: ClassVar[str] = ""
    #: How to make this backend available, e.g. ``pip install "unirt[openvino]"``.
    install_hint: ClassVar[str | None] = None
    #: ``"cpu"`` or ``"gpu"``: which device class the default routing order puts it in.
    device_class: ClassVar[str] = "cpu"
    #: Position in the default order for its device class: lower is tried first.
    default_rank: ClassVar[int] = 100
    #: True for the one backend every numeric check compares with (ONNX Runtime on the CPU):
    #: it is never verified against itself.
    is_reference: ClassVar[bool] = False
    #: Opset domains beyond the standard ones whose ops the engine implements (ONNX Runtime's
    #: ``com.microsoft``). Nodes of any other custom domain are UNSUPPORTED by :meth:`check`;
    #: nodes of these domains are judged by the op-support table (UNKNOWN when it lacks them).
    known_domains: ClassVar[tuple[str, ...]] = ()
    #: Options ``unirt bench --mode throughput`` opens the model with, so that the engine runs
    #: several requests at once its own way (OpenVINO: the THROUGHPUT hint, i.e. CPU streams).
    throughput_options: ClassVar[Mapping[str, Any]] = {}
    #: The options ``load(options={name: {...}})`` takes, checked by :meth:`validate_options`
    #: before ``_open_impl`` / ``_query_impl`` see them. ``None``: not declared, the backend
    #: takes whatever it is given (a plugin that checks for itself).
    options: ClassVar[Mapping[str, OptionSpec] | None] = None
    #: ``load(device=...)``'s words (auto, cpu, cuda, gpu) -> this engine's name for the device
    #: it runs on for each; a word missing here is a device it cannot run on
    #: (:meth:`device_name`). ``None``: not declared, the backend ignores ``device``.
    device_names: ClassVar[Mapping[str, str] | None] = None
    #: Where the backend runs, for the message that refuses a device missing from
    #: :attr:`device_names` ("it runs on a CUDA GPU").
    device_hint: ClassVar[str] = ""

    def __init__(self) -> None:
        self._availability: Availability | None = None

    # -- public API: checks, then the backend's _impl -------------------------------------------
    def available(self) -> Availability:
        """Can this backend run here at all? Cached; never raises."""
        if self._availability is None:
            try:
                result = self._available_impl()
            except Exception as exc:  # an engine that fails to import is simply unavailable
                logger.debug("availability check of %s failed", self.name, exc_info=True)
                result = Availability(False, reason=f"{type(exc).__name__}: {first_line(exc)}")
            if not result.available and result.install_hint is None and self.install_hint:
                result = Availability(
                    False, result.version, result.devices, result.reason, self.install_hint
                )
            self._availability = result
        return self._availability

    def open(self, model: ModelInfo, options: OpenOptions | None = None) -> BackendSession:
        """Open ``model`` on this engine. Raises ``BackendUnavailableError`` or ``BackendError``."""
        options = options or OpenOptions()
        if options.precision not in PRECISIONS:
            raise UnirtError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {options.precision!r}"
            )
        avail = self.available()
        if not avail.available:
            hint = f" (install: {avail.install_hint})" if avail.install_hint else ""
            raise BackendUnavailableError(f"{self.name} is not available: {avail.reason}{hint}")
        self.validate_options(options.extra)
        try:
            refusals = self.refusals(model)
            if refusals:
                raise BackendError(f"{self.name} cannot run {model.name}: "
                                   f"{refusals[0].message}")
            return self._open_impl(model, options)
        except UnirtError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{self.name} could not open {model.name}: {type(exc).__name__}: {first_line(exc)}"
            ) from exc

    def query(self, model: ModelInfo, options: OpenOptions | None = None) -> set[str] | None:
        """Ask the engine itself which nodes of ``model`` it cannot run (OpenVINO's
        ``query_model``, TensorRT's parser check). Returns the unsupported node names (empty: all
        supported), or ``None`` when this engine cannot answer without opening the model."""
        if not self.available().available:
            return None
        options = options or OpenOptions()
        self.validate_options(options.extra)
        try:
            return self._query_impl(model, options)
        except UnirtError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{self.name} could not query {model.name}: {type(exc).__name__}: {first_line(exc)}"
            ) from exc

    def validate_options(self, extra: Mapping[str, Any]) -> None:
        """Refuse, with a :class:`~unirt.errors.UnirtError`, an option this backend does not
        declare in :attr:`options` (naming the ones it does) or a value its spec refuses."""
        specs = type(self).options
        if specs is None:
            return
        for key in extra:
            if key not in specs:
                raise UnirtError(f"unknown {self.name} option {key!r}; known: "
                                 f"{', '.join(specs)}")
        for key, spec in specs.items():
            problem = spec.problem(extra.get(key))
            if problem:
                raise UnirtError(f"{self.name} option {key} {problem}")

    def refusals(self, model: ModelInfo) -> list[Reason]:
        """What in ``model`` this backend can never take, whatever the options
        (:meth:`_refusals_impl`), checked as :meth:`rules` checks. :meth:`open` refuses the
        first before ``_open_impl``; :meth:`rules` includes them all, so ``check`` refuses what
        ``open`` refuses, in the same words."""
        return self._checked_reasons("_refusals_impl", self._refusals_impl(model))

    def device_name(self, options: OpenOptions) -> str:
        """The engine's name for the device ``load(device=...)`` asks for (:attr:`device_names`).
        A device the backend cannot run on is a
        :class:`~unirt.errors.BackendUnavailableError` in one format for every backend, naming
        where it runs and the devices it sees here."""
        names = type(self).device_names
        if names is None:
            return options.device
        if options.device in names:
            return names[options.device]
        hint = f": {self.device_hint}" if self.device_hint else ""
        here = ", ".join(self.available().devices) or "none"
        raise BackendUnavailableError(f"{self.name} cannot run on {options.device!r}{hint} "
                                      f"(devices here: {here})")

    def rules(self, model: ModelInfo) -> list[Reason]:
        """This backend's own rules on ``model``: its :meth:`refusals`, then
        :meth:`_rules_impl`'s reasons, checked: a list of :class:`~unirt.capability.Reason`. A
        plugin that returns something else is a :class:`~unirt.errors.PluginError` that names
        it; its own exceptions pass through, for the caller to attribute (a broken rule must
        not hide the table's reasons)."""
        return self.refusals(model) + self._checked_reasons("_rules_impl",
                                                            self._rules_impl(model))

    def _checked_reasons(self, method: str, returned: Any) -> list[Reason]:
        reasons = list(returned)
        if not reasons:
            return reasons  # nothing to check: open() imports no capability code for it
        from unirt.capability.verdict import Reason

        bad = [r for r in reasons if not isinstance(r, Reason)]
        if bad:
            raise PluginError(f"{self.name}: {method} returned {bad[0]!r}, not a "
                              "unirt.capability.Reason")
        return reasons

    def host_outputs(self, model: ModelInfo) -> set[str]:
        """Output names of the nodes of ``model`` this backend computes outside its engine
        (:meth:`_host_outputs_impl`), checked: names of the model's tensors."""
        names = set(self._host_outputs_impl(model))
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise PluginError(f"{self.name}: _host_outputs_impl returned {bad[0]!r}, not a "
                              "tensor name")
        return names

    def check(self, model: ModelInfo) -> Verdict:
        """A static verdict (milliseconds, nothing is opened): SUPPORTED, UNSUPPORTED with every
        reason, or UNKNOWN, from the op-support table measured for the installed engine version
        (see :mod:`unirt.capability`) plus this backend's own rules (:meth:`_rules_impl`)."""
        from unirt.capability.judge import check_backend

        return check_backend(self, model)

    # -- what a plugin implements ---------------------------------------------------------------
    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        """Override where the engine can report per-node support without a full open."""
        return None

    def _refusals_impl(self, model: ModelInfo) -> list[Reason]:
        """The model's inputs and outputs (or anything else) this engine can never take or give,
        whatever the options: a sequence or optional where it takes tensors only, a dtype it
        cannot be fed. :meth:`open` refuses the first (``<backend> cannot run <model>:
        <message>``) and :meth:`check` reports them all; a plugin states each refusal once."""
        return []

    def _rules_impl(self, model: ModelInfo) -> list[Reason]:
        """Backend-wide rules the conformance table cannot express (ncnn: batch 1, float32 inputs
        only). Return a :class:`~unirt.capability.Reason` per violation; ``verdict=UNKNOWN`` on a
        reason for what is only doubtful. Called by :meth:`check` only when available."""
        return []

    def _host_outputs_impl(self, model: ModelInfo) -> set[str]:
        """Output tensor names of the nodes this backend computes itself, outside its engine
        (ncnn: an ArgMax at the end of the graph, done in numpy). :meth:`check` does not judge
        those nodes by the engine's op-support table, which would wrongly refuse them."""
        return set()

    @abstractmethod
    def _available_impl(self) -> Availability:
        """Return availability. Import the engine here, never at module level."""

    @abstractmethod
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        """Build the engine session. Exceptions are wrapped into ``BackendError`` by ``open``."""

