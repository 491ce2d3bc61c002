"""OpenVINO's error text, cut to what a user can act on: one wording for the errors of
reading, compiling, querying and running, so that a reason names the engine's complaint and not
the C++ file that threw it.
"""

from __future__ import annotations

import re

from unirt.plugin import clean

_NOISE_LINE = re.compile(r"^(Exception from \S+:\d+:?|Summary:|\[ GENERAL_ERROR \])$")
_NOISE_PART = re.compile(r"\s*Check '.*?' failed at \S+:\d+:?|^FrontEnd API failed with \w+:\s*")


def engine_message(exc: BaseException) -> str:
    """The lines of an OpenVINO error a user can act on, joined on one line.

    OpenVINO prefixes every message with the C++ file and line that threw (often twice), so the
    core's ``first_line`` would show only ``Exception from src/inference/src/cpp/core.cpp:84:``.
    """
    lines = [ln.strip(" -") for ln in str(exc).splitlines()]
    lines = [_NOISE_PART.sub("", ln).strip() for ln in lines if not _NOISE_LINE.match(ln.strip())]
    useful = [ln.rstrip(".:;") for ln in (clean(x) for x in lines) if ln.rstrip(".:;")]
    if not useful:
        return type(exc).__name__
    return "; ".join(useful[:3])
