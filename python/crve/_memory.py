"""Refuse, up front and with the figure, work whose memory would not fit (issue 7): a clear
message instead of an allocation failure or the machine swapping."""
from __future__ import annotations

import os

__all__ = ["available_bytes", "check_fits", "fmt_bytes"]


def available_bytes() -> float | None:
    """Memory available to this process now (MemAvailable on Linux, else physical pages), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_fits(nbytes: float, what: str, hint: str) -> None:
    """ValueError when ``nbytes`` exceeds the memory available now."""
    avail = available_bytes()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{what} needs about {fmt_bytes(nbytes)} of memory but only {fmt_bytes(avail)} is "
                         f"available; {hint}")
