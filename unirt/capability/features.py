"""Node features: what about a node can decide whether an engine runs it.

A conformance case and a real model's node are compared by the same features: attribute values
(schema defaults filled in), and input/output ranks and dtypes. Computed once per model and node,
shared by every backend's check, and by ``probe-ops`` when it records what each case exercised.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from unirt.model.info import ModelInfo, NodeInfo

#: Domains of the ONNX standard: ops of any other domain need an engine that implements it.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")

ABSENT = "-"
UNKNOWN_VALUE = "?"


def op_key(op_type: str, domain: str) -> str:
    """``"Conv"`` for the standard domain, ``"ai.onnx.ml::TreeEnsemble"`` otherwise."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"


@functools.lru_cache(maxsize=4096)
def _schema_info(op_type: str, domain: str, opset: int) -> tuple[dict[str, Any], int, int] | None:
    """(attribute defaults, index of a variadic formal input or -1, since_version)."""
    try:
        from onnx import defs, helper

        schema = defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except Exception:
        return None
    defaults: dict[str, Any] = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type:
            try:
                value = helper.get_attribute_value(attr.default_value)
            except Exception:
                continue
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list):
                value = tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x
                              for x in value)
            defaults[name] = value
    variadic = -1
    for i, formal in enumerate(schema.inputs):
        if formal.option == formal.option.Variadic:
            variadic = i
            break
    return defaults, variadic, int(schema.since_version)


def _attr_value(value: Any, default: Any = None, has_default: bool = False) -> str:
    """Coarse on purpose: an int/str/enum value decides support, a list's length (1D/2D/3D) does,
    a float's exact value almost never does (only whether it was changed from the default)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if has_default and isinstance(default, float) and abs(value - default) <= 1e-6 * max(
                1.0, abs(default)):
            return "default"
        return "set"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        if value and all(isinstance(x, str) for x in value):
            return ",".join(value)
        return f"len{len(value)}"
    return str(value)


#: Features per model and node, computed once and shared by every backend's check (a model is
#: checked against each candidate while routing: that must cost milliseconds, not a recompute).
_FEATURES: weakref.WeakKeyDictionary[ModelInfo, dict[int, dict[str, str]]] = (
    weakref.WeakKeyDictionary())
_FEATURES_LOCK = threading.Lock()


def node_features(model: ModelInfo, node: NodeInfo) -> dict[str, str]:
    """The features a node is judged on: ``@attr`` -> value, ``iK.t``/``iK.r`` -> input dtype and
    rank, ``oK.t``/``oK.r`` -> output dtype and rank. Missing attributes get their schema default;
    an omitted optional input is ``"-"``; what shape inference could not tell is ``"?"``.
    Memoised per model (the result must not be modified)."""
    with _FEATURES_LOCK:
        per_model = _FEATURES.setdefault(model, {})
        known = per_model.get(id(node))
    if known is not None:
        return known
    feats = _compute_features(model, node)
    with _FEATURES_LOCK:
        per_model[id(node)] = feats
    return feats


_SIGNATURES: weakref.WeakKeyDictionary[ModelInfo, dict[int, str]] = weakref.WeakKeyDictionary()


def node_signature(model: ModelInfo, node: NodeInfo, key: str, feats: dict[str, str]) -> str:
    """:func:`signature` memoised per model, like the features it is made of."""
    with _FEATURES_LOCK:
        per_model = _SIGNATURES.setdefault(model, {})
        sig = per_model.get(id(node))
    if sig is None:
        sig = signature(key, feats)
        with _FEATURES_LOCK:
            per_model[id(node)] = sig
    return sig


def _compute_features(model: ModelInfo, node: NodeInfo) -> dict[str, str]:
    domain = "" if node.domain == "ai.onnx" else node.domain
    opset = model.opsets.get(domain, model.opsets.get("ai.onnx", 0) if domain == "" else 0)
    info = _schema_info(node.op_type, domain, int(opset) or 1)
    defaults, variadic = (info[0], info[1]) if info else ({}, -1)
    feats: dict[str, str] = {}
    for name, value in node.attributes.items():
        feats["@" + name] = _attr_value(value, defaults.get(name), name in defaults)
    for name, value in defaults.items():
        if name not in node.attributes:
            feats["@" + name] = _attr_value(value, value, True)
    ins, outs = model.node_types(node)
    for prefix, facts in (("i", ins), ("o", outs)):
        for k, fact in enumerate(facts):
            if prefix == "i" and variadic >= 0 and k > variadic:
                break  # variadic inputs: the first stands for all (Concat of 2 or of 9)
            if fact is None:
                feats[f"{prefix}{k}.t"] = ABSENT
                continue
            dtype = fact.dtype or UNKNOWN_VALUE
            if fact.kind in ("sequence", "optional", "map"):
                dtype = f"{fact.kind}:{dtype}"
            feats[f"{prefix}{k}.t"] = dtype
            feats[f"{prefix}{k}.r"] = UNKNOWN_VALUE if fact.rank is None else str(fact.rank)
    return feats


def schema_since(model: ModelInfo, node: NodeInfo) -> int | None:
    """The since_version of the schema this node uses under the model's opset, if ONNX knows it."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    info = _schema_info(node.op_type, domain, int(model.opsets.get(domain, 0) or 1))
    return info[2] if info else None


def describe_feature(key: str, value: str) -> str:
    """``@mode``/``cubic`` -> ``attribute mode='cubic'``; ``i0.r``/``5`` -> ``input 0 rank 5``."""
    if key.startswith("@"):
        return f"attribute {key[1:]}={value!r}"
    m = re.fullmatch(r"([io])(\d+)\.([tr])", key)
    if not m:
        return f"{key}={value}"
    side = "input" if m.group(1) == "i" else "output"
    if value == ABSENT:
        return f"{side} {m.group(2)} omitted"
    what = "dtype" if m.group(3) == "t" else "rank"
    return f"{side} {m.group(2)} {what} {value}"


def feature_kind(key: str) -> str:
    """The reason kind a feature maps to: ``attribute``, ``dtype``, ``rank`` or ``input``."""
    if key.startswith("@"):
        return "attribute"
    return {"t": "dtype", "r": "rank"}.get(key[-1:], "input")



def is_discriminating(key: str) -> bool:
    """Whether a feature may explain a failure on its own: an attribute value or a dtype. Ranks
    are incidental (an LSTM's output has rank 4 in the one failing case because of ``layout=1``,
    not the other way round), so they never make a prediction by themselves."""
    return key.startswith("@") or key.endswith(".t")


def signature(key: str, feats: dict[str, str]) -> str:
    """One string for an op and its features: equal signatures, equal nodes as far as a table
    can tell."""
    return key + json.dumps(feats, sort_keys=True, separators=(",", ":"))
