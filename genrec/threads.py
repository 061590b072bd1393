"""How many CPU threads torch uses, and how that adapts when other processes share the cores.

torch starts one intra-op thread per core of the machine, even when this process may only run on
some of them (a container's CPU set, `taskset`), and OpenMP's idle threads spin while they wait for
work. Alone on the machine that is the fastest choice; two such processes on the same cores each
spin on the cores the other needs, and both run 5-10x slower (BENCHMARKS.md "Threads when processes
share the machine"). So the `genrec` command uses the cores this process may run on and, while it
trains, watches how much CPU the other processes take: when they keep cores busy it gives those
cores up (fewer threads, down to one), and takes them back when they are free again. `--threads N`
fixes the count instead.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from genrec.errors import ConfigError

log = logging.getLogger("genrec")

CHECK_EVERY_SECONDS = 2.0  # how often a training looks at the machine's load


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), or all of the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass
class _Sample:
    busy: int  # machine-wide busy time (jiffies)
    total: int  # machine-wide time (jiffies)
    own: float  # this process's CPU seconds, all threads
    wall: float


def _sample() -> _Sample | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None  # not Linux: no adaptation
    idle = fields[3] + fields[4]  # idle + iowait
    return _Sample(sum(fields) - idle, sum(fields), time.process_time(), time.perf_counter())


class ThreadGovernor:
    """Keeps torch's thread count at the cores other processes leave free (between 1 and `max_threads`)."""

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.cores = os.cpu_count() or 1
        self.last = _sample()

    def others_busy_cores(self, now: _Sample) -> float | None:
        """Cores' worth of CPU the other processes used since the last look."""
        if self.last is None or now.total <= self.last.total or now.wall <= self.last.wall:
            return None
        machine = (now.busy - self.last.busy) / (now.total - self.last.total) * self.cores
        own = (now.own - self.last.own) / (now.wall - self.last.wall)
        return max(0.0, machine - own)

    def update(self) -> int:
        """Look at the machine (at most every `CHECK_EVERY_SECONDS`) and set the thread count; returns it."""
        import torch

        current = torch.get_num_threads()
        now = _sample()
        if now is None or self.last is None or now.wall - self.last.wall < CHECK_EVERY_SECONDS:
            return current
        others = self.others_busy_cores(now)
        self.last = now
        if others is None:
            return current
        wanted = max(1, min(self.max_threads, int(self.cores - others + 0.5)))
        if wanted != current:
            torch.set_num_threads(wanted)
            log.info(
                "other processes use %.1f of %d cores: training with %d thread%s",
                others,
                self.cores,
                wanted,
                "s" if wanted > 1 else "",
            )
        return wanted


_governor: ThreadGovernor | None = None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to `threads`, or (None) to `available_cores()` and let training
    adapt the count to the machine's load (`adapt_threads`); returns the count set now."""
    global _governor
    import torch

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    count = threads or available_cores()
    torch.set_num_threads(count)
    _governor = ThreadGovernor(count) if threads is None and count > 1 else None
    return count


def adapt_threads() -> None:
    """Called in training loops: a no-op unless `configure_threads()` chose the count itself."""
    if _governor is not None:
        _governor.update()
