"""What ``load(verify_live=)`` asks for (:mod:`unirt.runtime.live` does the checking): checked
on every ``unirt.load``, before any work starts, so kept apart from the checker (and its imports).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from unirt.errors import UnirtError
from unirt.words import Word

#: ``UNIRT_VERIFY_LIVE=off|on|auto|FIRST,EVERY``: the default of ``load(verify_live=)``.
LIVE_ENV = "UNIRT_VERIFY_LIVE"
#: Calls checked from the start: a wrong engine is usually wrong on the traffic it sees first.
DEFAULT_FIRST = 8
#: After those, one call in this many: a 1 % sample costs the reference's CPU on 1 % of the calls
#: (in a child at lower priority), and finds an engine wrong on 5 % of the traffic within about
#: 2,000 calls.
DEFAULT_EVERY = 100
#: ``every`` when only the first calls are checked: a modulus no call count reaches.
_NEVER = 1 << 62


class LiveMode(Word):
    """``load(verify_live=)`` as a word."""

    AUTO = "auto"  # on when routing chose an engine other than the reference, and verifying
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class LiveSetting:
    """What ``load(verify_live=)`` (or ``UNIRT_VERIFY_LIVE``) asked for: a mode and a rate."""

    mode: LiveMode = LiveMode.AUTO
    first: int = DEFAULT_FIRST
    every: int = DEFAULT_EVERY

    def wanted(self, *, reference: bool, routed: bool, verify: str) -> bool:
        """Whether a session opened this way is checked live. The reference never is (nothing
        to compare with); ``auto`` checks an engine routing chose and verification let through,
        not one the caller named with ``backend=`` or opened with ``verify="never"``."""
        if reference or self.mode == LiveMode.OFF:
            return False
        return self.mode == LiveMode.ON or (routed and verify != "never")


_HELP = ("'auto', 'on', 'off', True, False, None or a (first, every) pair of integers >= 0 "
         "(check the first calls, then one call in every)")


def resolve_setting(value: Any = None) -> LiveSetting:
    """``load(verify_live=)`` checked: the argument, else ``UNIRT_VERIFY_LIVE``, else ``auto``.
    Raises ``UnirtError`` naming what is wrong, before any work starts."""
    if value is None:
        text = (os.environ.get(LIVE_ENV) or "").strip().lower()
        if not text:
            return LiveSetting()
        if text in (m.value for m in LiveMode):
            return LiveSetting(LiveMode(text))
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise UnirtError(f"{LIVE_ENV} must be off, on, auto or FIRST,EVERY (two integers "
                             f">= 0, e.g. 8,100), not {os.environ.get(LIVE_ENV)!r}")
        return _pair(int(parts[0]), int(parts[1]), LIVE_ENV)
    if isinstance(value, bool):
        return LiveSetting(LiveMode.ON if value else LiveMode.OFF)
    if isinstance(value, str):
        if value not in (m.value for m in LiveMode):
            raise UnirtError(f"verify_live must be {_HELP}, not {value!r}")
        return LiveSetting(LiveMode(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return _pair(value[0], value[1], "verify_live")
    raise UnirtError(f"verify_live must be {_HELP}, not {value!r}")


def _pair(first: int, every: int, what: str) -> LiveSetting:
    if first < 0 or every < 0:
        raise UnirtError(f"{what}: the calls checked first and the sampling interval must be "
                         f">= 0, not ({first}, {every})")
    if first == 0 and every == 0:
        raise UnirtError(f"{what}: (0, 0) checks no call; turn live verification off with "
                         "'off' instead")
    return LiveSetting(LiveMode.ON, first, every)
