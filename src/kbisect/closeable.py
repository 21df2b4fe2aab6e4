"""Something to close when done that is also a context manager that closes it on the way out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Closeable(ABC):
    """``with Thing(...) as thing:`` closes ``thing`` when the block ends, however it ends."""

    @abstractmethod
    def close(self) -> None:
        """Let go of what this holds; closing again does no harm."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
