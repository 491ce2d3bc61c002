"""Running an ONNX Runtime session: its plain ``run``, or IO binding where runs go to a device.

The CPU's plain ``run`` copies nothing; on a device it allocates and copies every input and
output on every call, which IO binding (:mod:`._binding`) avoids. ``_binding`` imports numpy, so
it is imported only by a session that binds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unirt.plugin import BackendSession

if TYPE_CHECKING:  # pragma: no cover
    from ._binding import BoundRunner


class OrtSession(BackendSession):
    """``details["providers"]`` is what ONNX Runtime actually uses (``get_providers()`` of the
    created session, the first one checked at open); ``details["io_binding"]`` says whether runs
    go through IO binding (see :mod:`._binding`) and on which device, or why not."""

    def __init__(self, sess: Any, bind_device: str | None = None) -> None:
        super().__init__()
        self._sess = sess
        self._run = sess.run
        self._bound: BoundRunner | None = None
        self.details["providers"] = sess.get_providers()
        if bind_device is None:
            return
        from ._binding import BoundRunner, bindable_feed, unbindable_outputs  # numpy: lazily

        self._bindable = bindable_feed
        skip = unbindable_outputs(sess)
        if skip:
            self.details["io_binding"] = f"off: non-tensor outputs {', '.join(skip)}"
            return
        device, _, index = bind_device.partition(":")
        self._bound = BoundRunner(sess, device, int(index or 0))
        self.details["io_binding"] = bind_device

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        bound = self._bound
        if bound is not None and all(self._bindable(v) for v in feeds.values()):
            return bound.run(feeds, output_names)
        return self._run(output_names, feeds)

    def close(self) -> None:
        self._sess = None
        self._bound = None
        self._run = None  # type: ignore[assignment]
