"""Test double of the ``tensorrt`` Python module (tests only), following the documented 10.x and
11.x signatures that unirt's plugin calls: Logger/ILogger, Builder, INetworkDefinition,
OnnxParser (parse_from_file, supports_model_v2, subgraphs, ParserError), IBuilderConfig (flags,
memory pool, profiles, timing cache), Runtime, ICudaEngine, IExecutionContext
(set_input_shape, set_tensor_address, execute_async_v3).

An "engine" is a JSON header plus the ONNX bytes; running it reads inputs from the fake CUDA
memory, runs ONNX Runtime on the CPU, and writes the outputs back. Knobs (environment, so that a
build child sees them): FAKE_TRT_VERSION (default 10.13.0.35), FAKE_TRT_UNSUPPORTED (ops the
parser refuses), FAKE_TRT_BUILD_SLEEP (seconds), FAKE_TRT_CRASH (abort in parse),
FAKE_TRT_BUILD_LOG (a file each build appends its settings to, as JSON lines).
"""

from __future__ import annotations

import enum
import json
import os
import time

import numpy as np

__version__ = os.environ.get("FAKE_TRT_VERSION", "10.13.0.35")
_MAJOR = int(__version__.split(".")[0])


class ILogger:
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:  # pragma: no cover - overridden
        pass


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


_flags = {"TF32": 0, "REFIT": 1, "STRIP_PLAN": 2}
if _MAJOR < 11:  # 11.x removed the weak-typing precision flags
    _flags.update({"FP16": 10, "BF16": 11, "INT8": 12, "OBEY_PRECISION_CONSTRAINTS": 13})
BuilderFlag = enum.IntEnum("BuilderFlag", _flags)


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
       DataType.INT64: np.int64}
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32,
              9: DataType.BOOL, 2: DataType.UINT8, 7: DataType.INT64, 16: DataType.BF16}


def nptype(trt_type):
    if trt_type not in _NP:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. "
                        f"{trt_type}")
    return _NP[trt_type]


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    INVALID_NODE = 6
    UNSUPPORTED_NODE = 8


class ParserError:
    def __init__(self, code, desc, node, node_name, op) -> None:
        self._v = (code, desc, node, node_name, op)

    def code(self):
        return self._v[0]

    def desc(self):
        return self._v[1]

    def node(self):
        return self._v[2]

    def node_name(self):
        return self._v[3]

    def node_operator(self):
        return self._v[4]

    def file(self):
        return "ModelImporter.cpp"

    def line(self):
        return 1

    def func(self):
        return "parseNode"


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.model: bytes | None = None
        self.inputs: list[tuple[str, int, tuple[int, ...]]] = []
        self.outputs: list[tuple[str, int]] = []
        self.num_layers = 0


def _unsupported() -> set[str]:
    return {o for o in os.environ.get("FAKE_TRT_UNSUPPORTED", "").split(",") if o}


class OnnxParser:
    def __init__(self, network, logger) -> None:
        self.network = network
        self.logger = logger
        self._errors: list[ParserError] = []
        self._subgraphs: list[tuple[list[int], bool]] = []

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, index):
        return self._errors[index]

    def clear_errors(self):
        self._errors.clear()

    def _check(self, model) -> bool:
        bad = _unsupported()
        for i, node in enumerate(model.graph.node):
            if node.op_type in bad:
                self._errors.append(ParserError(
                    ErrorCode.UNSUPPORTED_NODE,
                    f"No importer registered for op: {node.op_type}", i, node.name,
                    node.op_type))
        return not self._errors

    def parse_from_file(self, model):
        import onnx

        if os.environ.get("FAKE_TRT_CRASH"):
            os.abort()
        proto = onnx.load(model)
        if not self._check(proto):
            return False
        net = self.network
        net.model = proto.SerializeToString()
        init = {t.name for t in proto.graph.initializer}
        for vi in proto.graph.input:
            if vi.name in init:
                continue
            tt = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            net.inputs.append((vi.name, _FROM_ONNX[tt.elem_type], shape))
        for vi in proto.graph.output:
            net.outputs.append((vi.name, _FROM_ONNX[vi.type.tensor_type.elem_type]))
        net.num_layers = len(proto.graph.node)
        net.fp16_model = any(t.data_type == 10 for t in proto.graph.initializer)
        return True

    def supports_model_v2(self, model, path=None):
        import onnx

        proto = onnx.load_from_string(bytes(model))
        self._check(proto)
        bad = {e.node() for e in self._errors}
        run: list[int] = []
        self._subgraphs = []
        for i in range(len(proto.graph.node)):
            if i in bad:
                if run:
                    self._subgraphs.append((run, True))
                run = []
            else:
                run.append(i)
        if run:
            self._subgraphs.append((run, True))
        return not bad

    @property
    def num_subgraphs(self):
        return len(self._subgraphs)

    def is_subgraph_supported(self, index):
        return self._subgraphs[index][1]

    def get_subgraph_nodes(self, index):
        return list(self._subgraphs[index][0])


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input, min, opt, max):
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache:
    def __init__(self, entries=None) -> None:
        self.entries = set(entries or ())

    def serialize(self):
        return json.dumps({"v": __version__, "entries": sorted(self.entries)}).encode()

    def combine(self, input_cache, ignore_mismatch):
        self.entries |= input_cache.entries
        return True


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags = {BuilderFlag.TF32}
        self.pools: dict[int, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.timing: ITimingCache | None = None
        self.builder_optimization_level = 3

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def get_flag(self, flag):
        return flag in self.flags

    def set_memory_pool_limit(self, pool, pool_size):
        self.pools[int(pool)] = int(pool_size)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache()
        doc = json.loads(data)
        return ITimingCache(doc["entries"] if doc["v"] == __version__ else ())

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing = cache
        return True

    def get_timing_cache(self):
        return self.timing


class Builder:
    def __init__(self, logger) -> None:
        self.logger = logger
        if _MAJOR < 11:
            self.platform_has_fast_fp16 = True

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        import hashlib

        time.sleep(float(os.environ.get("FAKE_TRT_BUILD_SLEEP", "0")))
        profiles = []
        for p in config.profiles:
            profiles.append({k: [list(s) for s in v] for k, v in p.shapes.items()})
        for name, _, shape in network.inputs:
            if -1 in shape and (not profiles or any(name not in p for p in profiles)):
                self.logger.log(ILogger.ERROR, f"Network has dynamic or shape inputs, but no "
                                f"optimization profile has been defined for {name}.")
                return None
        strongly = _MAJOR >= 11 or bool(
            network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        settings = {"version": __version__, "flags": sorted(f.name for f in config.flags),
                    "strongly_typed": strongly, "profiles": profiles,
                    "workspace": config.pools.get(int(MemoryPoolType.WORKSPACE)),
                    "fp16_model": bool(getattr(network, "fp16_model", False)),
                    "timing_entries_before": len(config.timing.entries) if config.timing else 0}
        log = os.environ.get("FAKE_TRT_BUILD_LOG")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(settings) + "\n")
        if config.timing is not None:
            config.timing.entries.add(hashlib.sha256(network.model).hexdigest()[:16])
        header = {**settings, "inputs": [[n, int(t), list(s)] for n, t, s in network.inputs],
                  "outputs": [[n, int(t)] for n, t in network.outputs]}
        return b"FAKEENGINE\n" + json.dumps(header).encode() + b"\n" + network.model


class Runtime:
    def __init__(self, logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(b"FAKEENGINE\n"):
            self.logger.log(ILogger.ERROR, "Serialization assertion failed: magic tag")
            return None
        _, header, model = data.split(b"\n", 2)
        doc = json.loads(header)
        if doc["version"] != __version__:
            self.logger.log(ILogger.ERROR, "The engine plan file is not compatible with this "
                            "version of TensorRT")
            return None
        return ICudaEngine(doc, model)


class ICudaEngine:
    def __init__(self, header, model: bytes) -> None:
        self.header = header
        self.model = model
        self._inputs = [(n, DataType(t), tuple(s)) for n, t, s in header["inputs"]]
        self._outputs = [(n, DataType(t)) for n, t in header["outputs"]]

    @property
    def num_io_tensors(self):
        return len(self._inputs) + len(self._outputs)

    def get_tensor_name(self, index):
        names = [n for n, *_ in self._inputs] + [n for n, _ in self._outputs]
        return names[index]

    def get_tensor_mode(self, name):
        if any(n == name for n, *_ in self._inputs):
            return TensorIOMode.INPUT
        if any(n == name for n, _ in self._outputs):
            return TensorIOMode.OUTPUT
        return TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        for n, t, *_ in [*self._inputs, *self._outputs]:
            if n == name:
                return t
        raise KeyError(name)

    def get_tensor_shape(self, name):
        for n, _, s in self._inputs:
            if n == name:
                return s
        return ()

    @property
    def num_optimization_profiles(self):
        return max(1, len(self.header["profiles"]))

    def get_tensor_profile_shape(self, name, profile_index):
        return self.header["profiles"][profile_index][name]

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        import onnxruntime as ort

        self.engine = engine
        self.active_optimization_profile = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._results: dict[str, np.ndarray] | None = None
        self._sess = ort.InferenceSession(engine.model, providers=["CPUExecutionProvider"])
        self.calls = 0

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return False
        self.active_optimization_profile = profile_index
        self._shapes.clear()
        return True

    def set_input_shape(self, name, shape):
        shape = tuple(int(d) for d in shape)
        declared = self.engine.get_tensor_shape(name)
        if len(shape) != len(declared) or any(d not in (-1, s) for d, s in zip(declared, shape)):
            return False
        profiles = self.engine.header["profiles"]
        if profiles:
            active = profiles[self.active_optimization_profile]
            lo, _, hi = active.get(name, (declared, declared, declared))
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
        self._shapes[name] = shape
        self._results = None
        return True

    def set_tensor_address(self, name, memory):
        self._addresses[name] = int(memory)
        self._results = None
        return True

    def _compute(self):
        from cuda.bindings import runtime as cudart

        feeds = {}
        for name, dtype, _ in self.engine._inputs:
            shape = self._shapes[name]
            np_type = np.dtype(nptype(dtype))
            count = int(np.prod(shape, dtype=np.int64)) * np_type.itemsize
            data = cudart.device_memory(self._addresses[name], count) if count else b""
            feeds[name] = np.frombuffer(data, np_type).reshape(shape).copy()
        names = [n for n, _ in self.engine._outputs]
        self._results = dict(zip(names, self._sess.run(names, feeds)))

    def get_tensor_shape(self, name):
        if name in self._shapes:
            return self._shapes[name]
        if b"NonZero" in self.engine.model:  # data-dependent: unknown until run
            return (-1,)
        if self._results is None:
            self._compute()
        return tuple(self._results[name].shape)

    def execute_async_v3(self, stream_handle):
        import ctypes

        from cuda.bindings import runtime as cudart

        names = [n for n, *_ in self.engine._inputs] + [n for n, _ in self.engine._outputs]
        if any(n not in self._addresses for n in names):
            return False
        if self._results is None:
            self._compute()
        for name, value in self._results.items():
            value = np.ascontiguousarray(value.astype(nptype(self.engine.get_tensor_dtype(name))))
            if value.nbytes and not cudart.is_device(self._addresses[name], value.nbytes):
                return False
            ctypes.memmove(self._addresses[name], value.ctypes.data, value.nbytes)
        self.calls += 1
        return True
