"""Tensors on the wire of the Open Inference Protocol v2 (KServe v2, what Triton speaks).

Two forms of one request: the JSON tensor form (``"data": [...]`` in the JSON body) and the
binary tensor data extension that Triton's clients use by default: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of each input that declares
``"parameters": {"binary_data_size": N}``, in the order of the inputs. Responses use the same
framing for outputs asked for in binary (``binary_data`` per output, or ``binary_data_output``
for the request). Everything a client can get wrong here is a :class:`RequestError` (400) whose
message names the input and what is wrong: this module is the only place request bytes are
interpreted, so no malformed body reaches numpy or an engine as anything but a clean array.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unirt.errors import RequestError

#: v2 datatype -> numpy dtype name (BF16 needs ml_dtypes, which onnx already depends on).
_DTYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16",
    "BYTES": "object",
}
_DATATYPES = {v: k for k, v in _DTYPES.items()}


def datatype_of(dtype: Any) -> str:
    """The v2 datatype of a numpy dtype (``"FP32"``); strings are ``BYTES``."""
    if dtype is None:
        return "BYTES"  # a sequence or map: not a tensor the protocol can carry anyway
    d = np.dtype(dtype)
    if d.kind in "OUS":
        return "BYTES"
    name = _DATATYPES.get(d.name)
    if name is None:
        raise RequestError(f"dtype {d.name} has no Open Inference Protocol datatype")
    return name


def dtype_of(datatype: Any, what: str) -> np.dtype:
    """The numpy dtype of a v2 datatype, or a 400 naming ``what`` and the datatypes there are."""
    if not isinstance(datatype, str) or datatype not in _DTYPES:
        raise RequestError(f"{what}: unknown datatype {datatype!r}; one of "
                           f"{', '.join(_DTYPES)}")
    name = _DTYPES[datatype]
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: arrays by input name, in request order."""

    id: str | None
    inputs: dict[str, np.ndarray]
    #: the outputs asked for (None: all of them)
    outputs: tuple[RequestedOutput, ...] | None
    #: binary_data_output: outputs not listed (or all, when none are) come back in binary
    binary_output: bool


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise RequestError(f"{what}: 'shape' must be a list of non-negative integers, "
                           f"got {value!r}")
    return tuple(value)


def _parameters(obj: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RequestError(f"{what}: 'parameters' must be an object")
    return params


def _from_json_data(data: Any, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        raw = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise RequestError(f"{what}: 'data' is not a regular array ({exc})") from None
    if dtype.kind == "O":
        if raw.size and raw.dtype.kind not in "US":
            raise RequestError(f"{what}: BYTES data must be strings")
        arr = raw.astype(object)
    else:
        kinds = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "V": "biuf"}[dtype.kind]
        if raw.size and raw.dtype.kind == "O" and all(
                isinstance(v, int) and not isinstance(v, bool) for v in raw.reshape(-1)):
            raise RequestError(f"{what}: a value is out of the range of "
                               f"{datatype_of(dtype)}")  # beyond int64: numpy keeps objects
        if raw.size and raw.dtype.kind not in kinds:
            got = "strings" if raw.dtype.kind in "OUS" else f"{raw.dtype} values"
            raise RequestError(f"{what}: data of {got} cannot be {datatype_of(dtype)}")
        if raw.size and dtype.kind == "u" and raw.dtype.kind == "i" and raw.min() < 0:
            raise RequestError(f"{what}: negative values cannot be {datatype_of(dtype)}")
        # Never wrap or saturate silently: 2**40 as INT32 would become 0.
        if raw.size and dtype.kind in "iu" and raw.dtype.kind in "iu":
            info = np.iinfo(dtype)
            if int(raw.min()) < info.min or int(raw.max()) > info.max:
                raise RequestError(f"{what}: a value is out of the range of "
                                   f"{datatype_of(dtype)} ({info.min}..{info.max})")
        try:
            with np.errstate(over="raise", invalid="ignore"):
                arr = raw.astype(dtype)
        except FloatingPointError:
            raise RequestError(f"{what}: a value is out of the range of "
                               f"{datatype_of(dtype)}") from None
        except (ValueError, OverflowError, TypeError) as exc:
            raise RequestError(f"{what}: data cannot be {datatype_of(dtype)} ({exc})") from None
        if raw.size and dtype.kind == "f" and raw.dtype.kind == "f" and bool(
                (np.isinf(arr) & np.isfinite(raw)).any()):
            raise RequestError(f"{what}: a value is out of the range of {datatype_of(dtype)}")
    count = math.prod(shape)
    if arr.size != count:
        raise RequestError(f"{what}: shape {list(shape)} needs {count} values, 'data' has "
                           f"{arr.size}")
    return arr.reshape(shape)


def _from_bytes(buf: memoryview, dtype: np.dtype, shape: tuple[int, ...],
                what: str) -> np.ndarray:
    count = math.prod(shape)
    if dtype.kind == "O":
        items: list[str] = []
        pos, end = 0, len(buf)
        while pos < end:
            if pos + 4 > end:
                raise RequestError(f"{what}: BYTES data ends inside an element's length")
            (n,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if pos + n > end:
                raise RequestError(f"{what}: BYTES element of {n} bytes runs past the data")
            try:
                items.append(bytes(buf[pos:pos + n]).decode("utf-8"))
            except UnicodeDecodeError:
                raise RequestError(f"{what}: BYTES element is not UTF-8 text") from None
            pos += n
        if len(items) != count:
            raise RequestError(f"{what}: shape {list(shape)} needs {count} elements, the binary "
                               f"data holds {len(items)}")
        return np.array(items, dtype=object).reshape(shape)
    want = count * dtype.itemsize
    if len(buf) != want:
        raise RequestError(f"{what}: shape {list(shape)} of {datatype_of(dtype)} is {want} bytes, "
                           f"binary_data_size is {len(buf)}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if not arr.flags.aligned:  # the JSON header has any length: engines want aligned data
        arr = arr.copy()
    return arr


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request body (JSON, or JSON + binary tensor data)."""
    view = memoryview(body)
    if header_length is None:
        header, rest = view, view[len(view):]
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length must be an integer, got "
                               f"{header_length!r}") from None
        if not 0 <= n <= len(view):
            raise RequestError(f"Inference-Header-Content-Length {n} is outside the body of "
                               f"{len(view)} bytes")
        header, rest = view[:n], view[n:]
    try:
        doc = json.loads(bytes(header))
    except (ValueError, UnicodeDecodeError) as exc:
        hint = ("; binary tensor data needs the Inference-Header-Content-Length header"
                if header_length is None and isinstance(exc, UnicodeDecodeError) else "")
        raise RequestError(f"the request is not valid JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise RequestError("the request must be a JSON object with 'inputs'")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    binary_output = bool(_parameters(doc, "the request").get("binary_data_output", False))
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("the request needs 'inputs': a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(f"inputs[{i}] must be an object with a 'name'")
        name = item["name"]
        what = f"input {name!r}"
        if name in inputs:
            raise RequestError(f"{what} is given twice")
        dtype = dtype_of(item.get("datatype"), what)
        shape = _shape(item.get("shape"), what)
        size = _parameters(item, what).get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise RequestError(f"{what}: both 'data' and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(f"{what}: binary_data_size must be a non-negative integer")
            if offset + size > len(rest):
                raise RequestError(f"{what}: binary_data_size {size} runs past the body "
                                   f"({len(rest) - offset} bytes left after the JSON header)")
            inputs[name] = _from_bytes(rest[offset:offset + size], dtype, shape, what)
            offset += size
        elif "data" in item:
            if dtype.name == "bfloat16":
                raise RequestError(f"{what}: BF16 travels in binary form only")
            inputs[name] = _from_json_data(item["data"], dtype, shape, what)
        else:
            raise RequestError(f"{what} has neither 'data' nor binary_data_size")
    if offset != len(rest):
        raise RequestError(f"the body has {len(rest) - offset} bytes after the JSON header that "
                           "no input's binary_data_size accounts for")
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise RequestError("'outputs' must be a list")
        wanted = []
        for i, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RequestError(f"outputs[{i}] must be an object with a 'name'")
            params = _parameters(item, f"output {item['name']!r}")
            if params.get("classification"):
                raise RequestError(f"output {item['name']!r}: the classification extension is "
                                   "not supported")
            wanted.append(RequestedOutput(item["name"],
                                          bool(params.get("binary_data", binary_output))))
        outputs = tuple(wanted)
    return InferRequest(request_id, inputs, outputs, binary_output)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _element_text(item: Any) -> str:
    """One BYTES element as text: a map or sequence element of a non-tensor output (an ONNX
    sequence of maps, as skl2onnx's ZipMap gives) as JSON, so a client reads it with any JSON
    parser; anything else as ``str``."""
    if isinstance(item, (dict, list, tuple, np.ndarray)):
        if isinstance(item, dict):
            item = {str(k): v for k, v in item.items()}
        return json.dumps(item, default=_json_default, separators=(",", ":"))
    return str(item)


def as_tensor(value: Any) -> np.ndarray:
    """An output as an array the protocol carries: a tensor as it is, a sequence (of maps, of
    tensors) as a 1-D BYTES tensor of JSON texts, one per element."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        out = np.empty(len(value), dtype=object)
        for i, item in enumerate(value):
            out[i] = _element_text(item)
        return out
    return np.asarray(value)


def _to_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype.kind in "OUS":
        parts = []
        for item in arr.reshape(-1):
            raw = item if isinstance(item, bytes) else _element_text(item).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


def _to_json_data(arr: np.ndarray) -> list[Any]:
    flat = arr.reshape(-1)
    if arr.dtype.kind in "OUS":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else _element_text(x)
                for x in flat]
    if arr.dtype.name == "bfloat16":
        return flat.astype(np.float32).tolist()
    return flat.tolist()


def encode_infer_response(model: str, version: str, request_id: str | None,
                          results: Mapping[str, np.ndarray], binary: Sequence[bool],
                          parameters: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; ``binary[i]`` says how the i-th result travels."""
    outputs = []
    blobs = []
    for (name, value), as_binary in zip(results.items(), binary):
        arr = as_tensor(value)
        out: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype),
                               "shape": list(arr.shape)}
        if as_binary:
            blob = _to_bytes(arr)
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = _to_json_data(arr)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        doc["id"] = request_id
    doc["parameters"] = dict(parameters)
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
