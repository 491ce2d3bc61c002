"""The OpenVINO backend: options and devices, the refusal of inputs and outputs that are not
tensors, opening, and ``query``.

``query`` converts with the ONNX frontend's ``convert_partially`` rather than reading the model:
it keeps the nodes it has no conversion rule for as placeholders instead of failing, so those
nodes can be named as the answer. Mapping OpenVINO's operations back to ONNX nodes is
:mod:`._nodes`; compiling is :mod:`._compile`; running is :mod:`._session`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

from unirt.plugin import (
    Availability,
    Backend,
    BackendError,
    BackendSession,
    BackendUnavailableError,
    ModelInfo,
    OpenOptions,
    OptionSpec,
    UnirtError,
)

from . import _compile
from ._errors import engine_message
from ._nodes import is_placeholder, onnx_node_names
from ._session import OpenVinoSession

logger = logging.getLogger("unirt")

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
#: Options a user may pass as ``load(options={"openvino": {...}})``, with what they accept.
OPTIONS: dict[str, OptionSpec] = {
    "device": OptionSpec(
        "an OpenVINO device: CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:GPU,CPU ..."),
    "performance_hint": OptionSpec.choice(
        "LATENCY (default), THROUGHPUT or CUMULATIVE_THROUGHPUT", PERFORMANCE_HINTS),
    "num_streams": OptionSpec("int, or AUTO"),
    "cache": OptionSpec("bool: use OpenVINO's compiled-model cache (default True)"),
    "config": OptionSpec.mapping("dict of raw OpenVINO properties, applied last",
                                 "a dict of OpenVINO properties"),
}
#: Devices that stand for other devices (their list follows a colon) rather than hardware.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


class OpenVinoBackend(Backend):
    name = "openvino"
    description = "Intel OpenVINO (CPU by default; GPU, NPU, AUTO when present)"
    install_hint = 'pip install "unirt[openvino]"'
    device_class = "cpu"
    default_rank = 40
    # Several requests in flight run on CPU streams only under the THROUGHPUT hint; each thread
    # on a session has its own infer request (OpenVinoSession), so threads are the requests.
    throughput_options = {"performance_hint": "THROUGHPUT"}
    options = OPTIONS
    device_names = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU"}
    device_hint = "OpenVINO's GPU device is an Intel GPU, not an NVIDIA one"

    def __init__(self) -> None:
        super().__init__()
        self._core: Any = None
        self._core_lock = threading.Lock()

    # -- engine access ------------------------------------------------------------------------
    def core(self) -> Any:
        """One ``openvino.Core`` per backend: creating one loads the device plugins (slow)."""
        with self._core_lock:
            if self._core is None:
                import openvino as ov

                self._core = ov.Core()
            return self._core

    def _available_impl(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return Availability(False, reason="the openvino package is not installed")
        import openvino as ov

        version = getattr(ov, "__version__", None) or ov.get_version()
        devices = tuple(self.core().available_devices)
        if not devices:
            return Availability(False, version, reason="OpenVINO finds no device to run on")
        return Availability(True, version.split("-")[0], devices=devices)

    # -- static rules -------------------------------------------------------------------------
    def _refusals_impl(self, model: ModelInfo) -> list[Any]:
        """Graph inputs/outputs that are sequences, optionals or maps: OpenVINO cannot be fed
        or return them. Measured on 2026.4: ``read_model`` itself fails on a model taking a
        sequence ("No conversion rule found for operations: util::SequenceAt"), returning one
        (``util::SequenceMark``) or taking an optional (``OptionalGetElement-18``). Only inputs
        and outputs that are not tensors pay for the (memoised) type facts that tell which."""
        from unirt.plugin import Reason

        reasons = []
        for what, info in model.io():
            if info.dtype is not None or info.shape is not None:
                continue  # a tensor (an exotic element type is the table's business)
            fact = model.value_types.get(info.name)
            if fact is not None and fact.kind == "tensor":
                continue  # a tensor of undefined element type and rank, not a container
            kind = fact.kind if fact is not None and fact.kind != "?" else \
                "sequence, optional or map"
            article = "an" if kind[0] in "aeiou" else "a"
            reasons.append(Reason(
                f"{what} {info.name!r} is {article} {kind}: OpenVINO cannot be fed sequences "
                "or optionals (nor return them): it takes and gives tensors only", "input"))
        return reasons

    # -- options ------------------------------------------------------------------------------
    def device(self, options: OpenOptions) -> str:
        """The OpenVINO device for ``options``; a clear error when it is not on this machine.

        ``options={"openvino": {"device": ...}}`` wins; otherwise ``device="auto"`` and ``"cpu"``
        mean ``CPU`` and ``"gpu"`` means OpenVINO's ``GPU`` (an Intel GPU). ``"cuda"`` is refused:
        OpenVINO does not run on NVIDIA GPUs.
        """
        available = list(self.core().available_devices)
        requested = options.extra.get("device")
        if requested is None:
            requested = self.device_name(options)
        if not isinstance(requested, str) or not requested.strip():
            raise UnirtError(f"{self.name} option device must be a device name such as CPU or "
                             f"GPU, not {requested!r}")
        device = requested.strip().upper()
        head, _, listed = device.partition(":")
        wanted = [d for d in listed.split(",") if d] if head in VIRTUAL_DEVICES else [device]
        for name in wanted:
            if not any(a == name or a.split(".")[0] == name for a in available):
                raise BackendUnavailableError(
                    f"{self.name}: device {name} is not available on this machine "
                    f"(OpenVINO sees: {', '.join(available) or 'none'})")
        return device

    # -- opening ------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        core = self.core()
        device = self.device(options)
        base = _compile.properties(options)
        config = dict(base)
        compile_model = _compile.compiler(self.name, core, model, options, device, base, config)

        start = time.perf_counter()
        try:
            compiled = compile_model()
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not open {model.name} on {device}: "
                               f"{engine_message(exc)}") from exc
        sess = OpenVinoSession(compiled, model, model.name, reopen=compile_model)
        sess.precision = _compile.read_precision(compiled, options)
        sess.details.update(_compile.describe(compiled, device, config))
        sess.details["convert_s"] = round(time.perf_counter() - start, 4)  # read and compile
        logger.debug("openvino compiled %s on %s (%s)", model.name, device, sess.precision)
        return sess

    # -- asking the engine --------------------------------------------------------------------
    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        """ONNX node names OpenVINO cannot run on the device (empty: it can run them all).

        The model is converted with the ONNX frontend's ``convert_partially``, which keeps nodes
        it has no conversion rule for as ``ONNXFrameworkNode`` placeholders instead of failing.
        If there are any, those nodes are the answer: what follows them has unknown shapes and
        types, so the device's verdict on it says nothing. Otherwise ``Core.query_model`` names
        the OpenVINO operations the device supports, and the rest are mapped back to the ONNX
        nodes they came from (see :func:`._nodes.onnx_node_names`).
        """
        from openvino.frontend import FrontEndManager

        core = self.core()
        device = self.device(options)
        frontend = FrontEndManager().load_by_framework("onnx")
        source = model.source()
        try:
            converted = frontend.convert_partially(
                frontend.load(source if isinstance(source, str) else io.BytesIO(source)))
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not read {model.name}: "
                               f"{engine_message(exc)}") from exc
        ops = [op for op in converted.get_ordered_ops()
               if op.get_type_name() not in ("Parameter", "Result")]
        placeholders = [op for op in ops if is_placeholder(op.get_type_name())]
        if placeholders:
            return onnx_node_names(placeholders, model)
        try:
            supported = core.query_model(converted, device, _compile.properties(options))
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not query {model.name} on {device}: "
                               f"{engine_message(exc)}") from exc
        return onnx_node_names([op for op in ops if op.get_friendly_name() not in supported],
                                model)

