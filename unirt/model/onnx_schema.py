"""The ONNX protobuf message classes, for reading models without ``import onnx``.

``import onnx`` costs 50-150 ms (its helpers, ml_dtypes, its C++ checker); reading a model needs
only the message classes. They are built here from the schema ONNX publishes
(``onnx/onnx-ml.proto``, kept as data in :mod:`unirt.model.onnx_ml_descriptor`: field numbers are
ONNX's wire format and never change) in a descriptor pool of unirt's own, so that they never
clash with ``onnx``'s classes when both are imported. ``tests/test_model_info.py`` checks the
schema against the installed ``onnx``; ``scripts/gen_onnx_schema.py`` writes it again after the
``onnx`` pin moves.

A message of these classes reads as an ``onnx.ModelProto`` does (same fields, same methods, the
same parser) but is not one: :func:`unirt.model.info.read_model` keeps them inside; what needs
``onnx`` (shape inference, the checker, rewrites) reads the model with ``onnx`` itself.

With protobuf's default implementation (upb) the pool and classes are made with its extension
module directly, as ``descriptor_pool.DescriptorPool`` and ``message_factory.GetMessageClass``
make them: importing those Python modules costs another 15 ms (they bring in the pure-Python
implementation and text_format). Any other implementation, or any surprise, takes the public
API.
"""

from __future__ import annotations

import functools
from typing import Any

from unirt.model.onnx_ml_descriptor import ONNX_VERSION, SERIALIZED

__all__ = ["ONNX_VERSION", "data_types", "message_class"]


@functools.cache
def message_class(name: str) -> Any:
    """The message class for ``onnx.<name>`` (``"ModelProto"``...), from unirt's own pool."""
    pool = _pool()
    descriptor = pool.FindMessageTypeByName(f"onnx.{name}")
    if _upb_message(pool) is not None:
        return _upb_class(descriptor)
    return _public_class(descriptor)


@functools.cache
def data_types() -> dict[int, str]:
    """``TensorProto.DataType`` number -> name (``1: "FLOAT"``...), as in this schema."""
    enum = _pool().FindEnumTypeByName("onnx.TensorProto.DataType")
    return {v.number: v.name for v in enum.values}


@functools.cache
def _pool() -> Any:
    return _upb_pool() or _public_pool()


def _upb_message(pool: Any = None) -> Any:
    """protobuf's upb extension module, when it is the implementation in use (and made
    ``pool``, when one is given); else None."""
    _message = _upb_module()
    if _message is None or (pool is not None and not isinstance(pool, _message.DescriptorPool)):
        return None
    return _message


@functools.cache
def _upb_module() -> Any:
    try:
        from google.protobuf.internal import api_implementation

        if api_implementation.Type() != "upb":
            return None
        from google._upb import _message
    except Exception:
        return None
    return _message


def _upb_pool() -> Any:
    _message = _upb_message()
    if _message is None:
        return None
    try:
        pool = _message.DescriptorPool()
        pool.AddSerializedFile(SERIALIZED)
        return pool
    except Exception:  # an upb this was not written for: the public API
        return None


def _public_pool() -> Any:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(SERIALIZED)
    return pool


def _upb_class(descriptor: Any) -> Any:
    """``message_factory.GetMessageClass`` with upb: the class the descriptor has, else a new
    one of upb's metaclass, and the classes of the messages its fields hold."""
    concrete = getattr(descriptor, "_concrete_class", None)
    if concrete is not None:
        return concrete
    from google.protobuf import message

    _message = _upb_message()
    assert _message is not None
    cls = _message.MessageMeta(descriptor.name, (message.Message,),
                               {"DESCRIPTOR": descriptor, "__module__": None})
    for field in descriptor.fields:
        if field.message_type is not None:
            _upb_class(field.message_type)
    return cls


def _public_class(descriptor: Any) -> Any:
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.22
        from google.protobuf import message_factory

        return message_factory.MessageFactory(_pool()).GetPrototype(descriptor)
    return GetMessageClass(descriptor)
