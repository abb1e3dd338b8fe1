"""Write a bundle folder as a ``.tar.gz`` that is safe to unpack, and unpack archives safely.

Writing: members are the folder's regular files and directories only, named ``BUNDLE/relative``
(never absolute, never ``..``), in sorted order with fixed owner, mode and mtime, so the same
folder gives the same bytes. Extracting: every member is checked before anything is written; an
absolute name, a ``..`` component, a link, a device or FIFO, or a name that would land outside the
destination refuses the whole archive (one-line ``EdgekdError``). Python's own ``data`` filter is
applied on top where this Python has it.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path, PurePosixPath

from edgekd.errors import EdgekdError
from edgekd.io import atomic_write

_MTIME = 1_700_000_000  # fixed, so rebuilding the same bundle gives the same archive


def _check_name(name: str, archive: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise EdgekdError(f"refusing {archive}: member {name!r} has an absolute path or '..'; it is not a safe bundle")
    return path


def write_tarball(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``folder`` -> ``out`` (.tar.gz) with members under ``folder``'s name; refuses links."""
    folder = Path(folder)
    entries = [folder, *sorted(folder.rglob("*"))]

    def write(tmp: Path) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for p in entries:
                if p.is_symlink() or not (p.is_file() or p.is_dir()):
                    raise EdgekdError(f"{p} is a link or special file; a bundle holds regular files only")
                rel = PurePosixPath(folder.name, *p.relative_to(folder).parts)
                _check_name(str(rel), str(out))
                info = tarfile.TarInfo(str(rel))
                info.mtime, info.uid, info.gid, info.uname, info.gname = _MTIME, 0, 0, "root", "root"
                if p.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size = p.stat().st_size
                    info.mode = 0o755 if os.access(p, os.X_OK) else 0o644
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
        with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=_MTIME, filename="") as gz:
            gz.write(raw.getvalue())

    atomic_write(out, write)
    Path(out).chmod(0o644)
    return Path(out)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract ``archive`` into ``dest`` after checking every member; returns the files written."""
    archive, dest = Path(archive), Path(dest)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as err:
        raise EdgekdError(f"cannot read {archive} as a tar archive ({err}); pass a bundle .tar.gz") from None
    with tar:
        members = tar.getmembers()
        root = dest.resolve()
        for m in members:
            path = _check_name(m.name, str(archive))
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise EdgekdError(
                    f"refusing {archive}: member {m.name!r} is a {kind}; a bundle holds regular files only"
                )
            target = (root / Path(*path.parts)).resolve()
            if target != root and root not in target.parents:
                raise EdgekdError(f"refusing {archive}: member {m.name!r} would be written outside {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)
    return [dest / m.name for m in members if m.isfile()]
