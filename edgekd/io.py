"""Atomic file writes and content hashes.

Every artifact is written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written file that looks finished (DESIGN.md, run directory).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import StorageError

# OS errors that are about the disk, not the data: reported as what they are (issue 20, defect 2)
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_FULL_BYTES = 64 * 1024  # less free than this when a write failed: the disk is full
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]|No space left on device|Disk quota exceeded|Read-only file system")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def storage_errno(exc: BaseException | None) -> tuple[int, OSError | None] | None:
    """``(errno, the OSError)`` when ``exc`` or an exception it was raised from is a disk error
    (no space, quota, permission, read-only), also when a library kept only its text; else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc.errno, exc
        match = _ERRNO_TEXT.search(str(exc)) if not isinstance(exc, StorageError) else None
        if match:
            text = match.group(0)
            code = int(match.group(1)) if match.group(1) else None
            code = code or (errno.ENOSPC if "space" in text else errno.EDQUOT if "quota" in text else errno.EROFS)
            if code in STORAGE_ERRNOS:
                return code, None
        exc = exc.__cause__ or exc.__context__
    return None


def storage_error(
    exc: BaseException, path: str | os.PathLike | None = None, written: int | None = None, code: int | None = None
) -> StorageError:
    """The one-line ``StorageError`` for a disk error ``exc`` (see :func:`storage_errno`) while writing ``path``:
    what happened, where, and for a full disk the space free there and the bytes it needed (at least)."""
    found, oserr = storage_errno(exc) or (errno.EIO, None)
    code = code or found
    where = Path(path) if path is not None else Path(getattr(oserr, "filename", None) or ".")
    what = STORAGE_ERRNOS.get(code, os.strerror(code))
    if code in (errno.ENOSPC, errno.EDQUOT):
        folder = next((p for p in (where, *where.parents) if p.is_dir()), Path("."))
        try:
            free = _human(shutil.disk_usage(folder).free)
        except OSError:
            free = "unknown"
        need = f"; it needed more than {_human(written)} (written when the disk filled)" if written else ""
        return StorageError(
            f"could not write {where}: {what} (errno {code}); {free} free on the filesystem of {folder}{need}; "
            "free some space or choose an --out on another disk"
        )
    if code == errno.EROFS:
        fix = "choose an --out on a writable disk"
    else:
        fix = "make the folder writable for this user or choose another --out"
    return StorageError(f"could not write {where}: {what} (errno {code}); {fix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; remove the temp on failure.

    A disk error (no space, no permission, read-only), also one that ``write`` wrapped in its own
    error, becomes a :class:`StorageError` naming ``path`` and the space free and needed."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        with open(tmp_path, "rb") as f:  # durable before it becomes visible under its real name
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        written, full = None, False
        if tmp_path is not None:
            try:
                written = tmp_path.stat().st_size
                # some writers (torch.save's zip writer) lose the errno: a write that failed on a full disk is that
                full = isinstance(exc, Exception) and shutil.disk_usage(path.parent).free < _FULL_BYTES
            except OSError:
                pass
            tmp_path.unlink(missing_ok=True)
            if full:
                import gc

                gc.collect()  # a writer that failed may hold the unlinked file open (torch.save): free its space now
        if not isinstance(exc, StorageError) and (full or storage_errno(exc) is not None):
            raise storage_error(exc, path, written, code=errno.ENOSPC if full else None) from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
