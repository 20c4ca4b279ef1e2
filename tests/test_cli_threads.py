"""The thread count of ``lightning-mm``: the CPUs this process may use, an explicit choice kept."""

from __future__ import annotations

import pytest

from lightning_mm.commands import threads
from lightning_mm.commands.threads import (
    NUM_THREADS_ENV,
    available_cpus,
    busy_cpus_now,
    cgroup_cpu_limit,
    choose_num_threads,
    thread_count_line,
)
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


def test_busy_cpus_now_reads_the_runnable_count_less_the_reader(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.91 1.20 0.80 3/412 90210\n")
    assert busy_cpus_now(loadavg, samples=3, interval=0) == 2.0
    loadavg.write_text("0.10 0.20 0.30 1/412 90210\n")
    assert busy_cpus_now(loadavg, samples=2, interval=0) == 0.0
    assert busy_cpus_now(tmp_path / "missing", samples=1) is None


def test_a_run_that_just_ended_does_not_cost_threads(monkeypatch):
    # The one-minute average still shows a run that ended seconds ago (1.9 on 2 CPUs), nothing is runnable now: the
    # new run takes both CPUs. With the other run still going, it takes one.
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.5, 1.0))
    monkeypatch.setattr(threads, "busy_cpus_now", lambda: 0.0)
    assert thread_count_line(2, env={})[0] is None  # torch's own 2 threads kept
    monkeypatch.setattr(threads, "busy_cpus_now", lambda: 2.0)
    count, line = thread_count_line(2, env={})
    assert count == 1 and "1.9 busy with other work" in line
