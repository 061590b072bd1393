"""Thread count: the cores this process may use, fewer while other processes keep cores busy."""

import pytest
import torch

from genrec import threads
from genrec.errors import ConfigError
from genrec.threads import ThreadGovernor, _Sample


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._governor = None


def test_configure_threads_uses_the_cores_this_process_may_use():
    assert threads.configure_threads() == threads.available_cores() == torch.get_num_threads()
    assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
    assert threads._governor is None  # a count the user fixed is never changed
    with pytest.raises(ConfigError, match="--threads must be >= 1"):
        threads.configure_threads(0)


def test_the_governor_gives_cores_to_other_processes_and_takes_them_back(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    governor = ThreadGovernor(max_threads=4)
    # 10 s, 4 cores = 4000 jiffies: the machine was fully busy, this process used 1 core -> others use 3
    governor.last = _Sample(busy=0, total=0, own=0.0, wall=0.0)
    monkeypatch.setattr(threads, "_sample", lambda: _Sample(busy=4000, total=4000, own=10.0, wall=10.0))
    assert governor.update() == 1 and torch.get_num_threads() == 1
    # the next 10 s: the machine used 1.5 cores, all of them this process's -> 4 threads again
    monkeypatch.setattr(threads, "_sample", lambda: _Sample(busy=5500, total=8000, own=25.0, wall=20.0))
    assert governor.update() == 4 and torch.get_num_threads() == 4
    # two other cores busy -> half of the cores
    monkeypatch.setattr(threads, "_sample", lambda: _Sample(busy=5500 + 4000, total=12000, own=45.0, wall=30.0))
    assert governor.update() == 2
    # looks at the machine at most every CHECK_EVERY_SECONDS
    monkeypatch.setattr(threads, "_sample", lambda: _Sample(busy=9500, total=12040, own=45.1, wall=30.1))
    assert governor.update() == 2 and governor.last.wall == 30.0
