"""A deadline object instead of scattered sleeps and timeouts (every wait in kbisect has one)."""

from __future__ import annotations

import time


class Deadline:
    """A point in monotonic time; `remaining()` is what a wait may still use."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end
