"""The manifest (``.manifest.json`` in the site directory): what the last render made from what,
so that the next one renders only what changed. It holds every rendered run's key, summary (for
the index) and history entries, the keys of line, build, bisection and findings pages, and of
long logs' pages; every key is over the layout (kbisect, templates, the browser's code) as well."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kbisect.browser.history import Entry

MANIFEST = ".manifest.json"
MANIFEST_FORMAT = 2


class Manifest:
    """What the last render made from what (``.manifest.json`` in the site directory)."""

    def __init__(self, path: Path, layout: str) -> None:
        self.path = path
        self.layout = layout
        self.runs: dict[str, dict[str, Any]] = {}
        self.lines: list[list[str]] = []
        """Cell lines, so that run entries can name theirs by index."""
        self.logs: dict[str, str] = {}
        self.line_keys: dict[str, str] = {}
        self.builds: dict[str, dict[str, Any]] = {}
        self.bisections: dict[str, dict[str, Any]] = {}
        self.findings: dict[str, dict[str, Any]] = {}
        """Findings pages by experiment: their key and how many cells they show."""
        self._index: dict[tuple[str, ...], int] = {}
        self._unpacked: dict[int, list[list[Any]]] = {}
        self.marks: dict[str, Any] = {}
        """Largest cell id and changes rowid seen, and every run's signature (store.signatures)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if (
            not isinstance(data, dict)
            or data.get("format") != MANIFEST_FORMAT
            or data.get("layout") != layout
        ):
            return
        self.runs = data["runs"]
        self.lines = data["lines"]
        self.logs = data["logs"]
        self.line_keys = data["line_keys"]
        self.builds = data["builds"]
        self.bisections = data["bisections"]
        self.marks = data["marks"]
        self.findings = data.get("findings", {})  # absent from manifests of older renders
        self._index = {tuple(line): i for i, line in enumerate(self.lines)}

    def packed_entries(self, run_id: int) -> list[list[Any]]:
        """A run's entries with lines by index (kept as a JSON string: most renders need the
        entries of a few runs only, and decoding all of them would cost more than the rest)."""
        found = self._unpacked.get(run_id)
        if found is None:
            found = self._unpacked[run_id] = json.loads(self.runs[str(run_id)]["entries"])
        return found

    def entries(self, run_id: int) -> list[Entry]:
        return [(self.lines[i], rev, cells) for i, rev, cells in self.packed_entries(run_id)]

    def pack(self, run_id: int, entries: list[Entry]) -> tuple[str, list[int]]:
        """A run's entries for the manifest, and the indices of its lines."""
        out: list[list[Any]] = []
        indices: set[int] = set()
        for line, rev, cells in entries:
            key = tuple(line)
            if key not in self._index:
                self._index[key] = len(self.lines)
                self.lines.append(list(line))
            indices.add(self._index[key])
            out.append([self._index[key], rev, cells])
        self._unpacked[run_id] = out
        return json.dumps(out, separators=(",", ":")), sorted(indices)

    def save(self) -> None:
        data = {
            "format": MANIFEST_FORMAT,
            "layout": self.layout,
            "runs": self.runs,
            "lines": self.lines,
            "logs": self.logs,
            "line_keys": self.line_keys,
            "builds": self.builds,
            "bisections": self.bisections,
            "marks": self.marks,
            "findings": self.findings,
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":"), default=str))
        tmp.replace(self.path)
