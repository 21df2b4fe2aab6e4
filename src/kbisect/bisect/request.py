"""What a bisection was asked to do, stored with it so that `--resume ID` needs nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BisectRequest:
    """Everything a bisection needs, stored with it (commit ids resolved once, at the start)."""

    tree: str
    good: list[str]
    bad: str
    predicate: str  # run, build or job
    variant: str | None = None
    command: str | None = None
    command_timeout: float = 3600.0
    job: str | None = None
    test: str | None = None
    host: str | None = None
    profile: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    good_given: list[str] = field(default_factory=list)
    bad_given: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BisectRequest:
        return cls(**data)
