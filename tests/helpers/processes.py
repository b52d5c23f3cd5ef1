"""Processes seen through /proc: the quantize workers of a process, and whether a PID is alive."""

from __future__ import annotations

from pathlib import Path

WORKER = "optim.stages.quantize.worker"


def quantize_workers(parent: int) -> list[int]:
    """PIDs of the quantize workers whose parent is ``parent`` (from /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(next(ln for ln in (d / "status").read_text().splitlines() if ln.startswith("PPid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        if WORKER in cmd and ppid == parent:
            found.append(int(d.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state.split()[1]  # a zombie is dead, waiting to be reaped
