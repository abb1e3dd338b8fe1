"""Peak memory of one measurement: the growth of this process's peak resident set (Linux).

Linux keeps the peak resident set size of a process (``VmHWM`` in ``/proc/self/status``) and
resets it to the current size when ``5`` is written to ``/proc/self/clear_refs``. Resetting it
before a model is loaded and reading it after the timed runs gives the peak host memory while
the model was loaded and run, exactly, without a sampling thread. Where that is not
possible (another OS, a locked-down /proc) the result is ``None`` and says so; GPU memory is
reported by the GPU runtimes themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.peak_mib`` (the process's peak RSS inside the block, MiB)
    and ``m.added_mib`` (how far that peak rose above the RSS at entry; memory the allocator reused
    from earlier models does not count, so this can be 0 for a small model), or None."""

    def __init__(self) -> None:
        self.base_kib: int | None = None
        self.peak_mib: float | None = None
        self.added_mib: float | None = None

    def __enter__(self) -> PeakMemory:
        try:
            _CLEAR.write_text("5")
        except OSError:
            return self
        self.base_kib = _kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        peak = _kib("VmHWM")
        if self.base_kib is not None and peak is not None:
            self.peak_mib = peak / 1024.0
            self.added_mib = max(0.0, (peak - self.base_kib) / 1024.0)
