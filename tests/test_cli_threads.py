"""The thread count of ``lightning-mm``: the CPUs this process may use, an explicit choice kept."""

from __future__ import annotations

import pytest

from lightning_mm.commands.threads import NUM_THREADS_ENV, available_cpus, cgroup_cpu_limit, choose_num_threads
from lightning_mm.errors import ConfigError


def test_count_follows_the_free_cpus_and_keeps_an_explicit_choice():
    assert choose_num_threads(8, 4, 0.0, {})[0] == 4  # affinity / quota of 4 on an 8-core machine
    assert choose_num_threads(2, 2, 2.1, {})[0] == 1  # two other trainings on the 2 cores
    assert choose_num_threads(2, 2, 0.3, {})[0] is None  # idle: torch's own count
    assert choose_num_threads(1, 8, 0.0, {})[0] is None  # set lower before (torch.set_num_threads): kept
    assert choose_num_threads(8, 4, 3.0, {"OMP_NUM_THREADS": "8"})[0] is None  # torch read it: left alone
    assert choose_num_threads(8, 4, 3.0, {NUM_THREADS_ENV: "6"})[0] == 6
    with pytest.raises(ConfigError, match=f"{NUM_THREADS_ENV}='two'"):
        choose_num_threads(8, 4, 0.0, {NUM_THREADS_ENV: "two"})


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 2
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1.parent) == 3
    assert cgroup_cpu_limit(tmp_path / "none") is None
    assert 1 <= available_cpus(v1.parent) <= 3
