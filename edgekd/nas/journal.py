"""``search/trials.jsonl``: one JSON line per evaluated candidate, the search's journal.

Each line holds the candidate's arch spec, parameters, FLOPs, latency with its source, the
budget, its status (``trained`` or ``rejected`` before training for exceeding the budget), its
proxy score and wall time. A search that was cut off reads the journal back and never trains a
candidate twice: a candidate the strategy proposes again gets its recorded score. Lines are
appended under an exclusive ``flock`` and fsynced (trials of NNI's training service append from
several processes); a torn last line from a crash is ignored on reading.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from edgekd.io import sha256_json


def arch_key(spec: dict[str, Any] | str) -> str:
    """A short stable id of an arch spec (the same architecture always gets the same key)."""
    return sha256_json(spec)[:16]


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if isinstance(rec, dict) and "key" in rec:
                records.append(rec)
        return records

    def by_key(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.read() if kind is None or r.get("kind") == kind}

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
