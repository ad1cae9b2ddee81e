"""Stop a driver's local Ray when the driver dies: ``python reaper.py DRIVER_PID`` (stdlib only).

Started by ``cluster.start_ray`` in its own session. While the driver lives it records, every
half second, the driver's descendant processes (Ray's GCS, raylet, agents and workers) with their
start times. When the driver is gone (or on SIGTERM: the driver shut Ray down itself) it sends
SIGTERM, then SIGKILL after a grace period, to the recorded processes still alive: by PID, and
only where the start time still matches (a reused PID is never touched). Linux ``/proc`` only;
elsewhere it exits at once.
"""
from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in (b"Z", b"X"):  # a zombie has ended already
        return None
    return int(fields[1]), int(fields[19])


def is_ray(pid: int) -> bool:
    """Ray's own processes: its binaries and Python modules (``.../ray/...``) and workers (``ray::...``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return cmd.startswith(b"ray::") or b"/ray/" in cmd


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of the live Ray processes under ``root`` and everything under them."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out: dict[int, int] = {}
    todo = [(pid, False) for pid in children.get(root, [])]
    while todo:
        pid, under_ray = todo.pop()
        if pid not in starts or pid in out or pid == os.getpid():
            continue
        under_ray = under_ray or is_ray(pid)
        if under_ray:
            out[pid] = starts[pid]
        todo.extend((c, under_ray) for c in children.get(pid, []))
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def reap(recorded: dict[int, int], grace_s: float = GRACE_S) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``, the recorded processes still alive; returns how many."""
    live = {p: s for p, s in recorded.items() if p != os.getpid() and _alive(p, s)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in live:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while live and time.monotonic() < deadline:
            live = {p: s for p, s in live.items() if _alive(p, s)}
            time.sleep(0.1)
    return len(live)


def main(argv: list[str]) -> int:
    if not os.path.isdir("/proc") or len(argv) != 1:
        return 0
    driver = int(argv[0])
    driver_stat = _stat(driver)
    if driver_stat is None:
        return 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    recorded: dict[int, int] = {}
    while not stop and _alive(driver, driver_stat[1]):
        recorded.update(descendants(driver))
        time.sleep(POLL_S)
    recorded.update(descendants(driver) if _alive(driver, driver_stat[1]) else {})
    reap(recorded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
