"""OpenCV's error text, cut to what a user can act on: one wording for the errors of reading a
model and of running it, so that a reason names the cause OpenCV nests in its later lines and
not the C++ file and function that threw.
"""

from __future__ import annotations

import re

from unirt.plugin import clean

_LOCATION = re.compile(r"OpenCV\([^)]*\)\s+\S+:\d+:\s*error:\s*\(\s*-?\d+:([^)]*)\)\s*")
_IN_FUNCTION = re.compile(r"\s*in function '[^']*'\s*$")


def engine_message(exc: BaseException) -> str:
    """The part of a ``cv2.error`` a user can act on, on one line.

    OpenCV writes ``OpenCV(5.0.0) /io/opencv/modules/dnn/src/...cpp:1114: error: (-2:Unspecified
    error) in function 'handleNode'`` and nests the real cause (``> Node [Unsqueeze@ai.onnx]:...
    parse error: ... Multidimensional unsqueeze``) in later lines, so the core's ``first_line``
    would show only the file and line. Source locations and ``in function`` suffixes are dropped;
    the error class is kept where it says something (``Assertion failed: inp.total()``).
    """
    parts: list[str] = []
    for raw in str(exc).splitlines():
        line = raw.strip().lstrip(">").strip()

        def _kind(m: re.Match[str]) -> str:
            kind = m.group(1).strip()
            return "" if kind in ("", "Unspecified error") else f"{kind}: "

        line = _LOCATION.sub(_kind, line)
        line = _IN_FUNCTION.sub("", line).strip().rstrip(":").strip()
        if line and line not in parts:
            parts.append(line)
    if not parts:
        return type(exc).__name__
    return clean("; ".join(parts[:2]))
