"""results: the store (SQLite, the source of truth) and what is exported from it (JUnit XML).

kbisect.results.junit is imported on its own: it is the only module that needs junit-xml.
"""

from kbisect.results.model import (
    BuildRecord,
    CellIdentity,
    CellRecord,
    Evidence,
    LogKind,
    LogRef,
    ResultStatus,
    RunRecord,
    RunStatus,
    SubtestRecord,
)
from kbisect.results.store import ResultsStore

__all__ = [
    "BuildRecord",
    "CellIdentity",
    "CellRecord",
    "Evidence",
    "LogKind",
    "LogRef",
    "ResultStatus",
    "ResultsStore",
    "RunRecord",
    "RunStatus",
    "SubtestRecord",
]
