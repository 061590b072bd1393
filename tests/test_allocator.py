import os
import subprocess
import sys
import textwrap

import pytest

from genrec import allocator

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc's mallopt"
)

# allocate, write and free tensors of 1-24 MB as a training step does; print the page faults of a round
CHURN = textwrap.dedent(
    """
    import resource, sys, torch
    from genrec.allocator import keep_freed_memory
    print(keep_freed_memory() if sys.argv[1] == "keep" else None)
    def churn():
        for megabytes in (1, 5, 3, 12, 7, 24, 2, 9):
            a = torch.ones(megabytes << 18)
            b = a * 2
            del a, b
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        churn()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
)


def page_faults_per_round(mode: str, env: dict | None = None) -> tuple[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, env=env or os.environ.copy()
    )
    returned, faults = result.stdout.split()
    return returned, float(faults)


@glibc_only
def test_freed_tensors_are_reused_without_page_faults():
    # three processes each: the kernel's own memory management (e.g. DAMON reclaim) adds faults now
    # and then, and glibc's dynamic threshold makes the default's count vary (2,000-12,000 here)
    default_faults = max(page_faults_per_round("default")[1] for _ in range(3))
    assert default_faults > 1000  # glibc gives MB-sized blocks back to the kernel: every round faults them in
    kept = [page_faults_per_round("keep") for _ in range(3)]
    assert all(returned == "True" for returned, _ in kept)
    assert min(faults for _, faults in kept) < default_faults / 8


@glibc_only
def test_an_allocator_the_user_chose_is_left_alone(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("GENREC_KEEP_FREED_MEMORY", "0")
    assert allocator.keep_freed_memory() is False


def test_nothing_is_set_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
