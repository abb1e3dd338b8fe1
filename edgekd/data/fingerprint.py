"""The data fingerprint: one sha256 naming the source's content and the split settings.

Stages put it into their own input fingerprints, so a changed file, a changed split or a changed
subset reruns them, and an unchanged one lets ``--resume`` skip them. Content is identified by
what each loader reports (npz: name, size and sha256 of every file; ImageFolder: relative paths
and sizes; digits: hashes of the arrays). Bump ``FORMAT`` when loading semantics change.
"""

from __future__ import annotations

from typing import Any

from edgekd.data.bundle import LoadedSource
from edgekd.io import sha256_json

FORMAT = 1


def data_fingerprint(source: LoadedSource, settings: dict[str, Any]) -> str:
    return sha256_json(
        {
            "format": FORMAT,
            "kind": source.kind,
            "name": source.name,
            "content": source.content,
            "settings": settings,
        }
    )
