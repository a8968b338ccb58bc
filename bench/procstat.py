"""CPU time and memory of a process tree, read from /proc (Linux; no psutil needed)."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ")"
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo and len(pids) < 10_000:
        current = todo.pop()
        pids.append(current)
        todo.extend(children(current))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` (all threads) and of its children it has reaped."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    # after the ")": state=0 ppid=1 … utime=11 stime=12 cutime=13 cstime=14
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) in kB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine spent (all CPUs, not idle, not waiting on I/O)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK
