"""CPU accounting of `bench serve --overhead`: /proc readings agree with getrusage."""

from __future__ import annotations

import os
import subprocess
import sys

from pagefleet.platform.bench.cpu import CpuMeter, own_cpu_s, process_cpu_s


def _burn(cpu_s: float) -> None:
    start = own_cpu_s()
    while own_cpu_s() - start < cpu_s:
        sum(range(10_000))


def test_proc_reading_of_this_process_matches_getrusage():
    before_proc, before_own = process_cpu_s(os.getpid()), own_cpu_s()
    _burn(0.3)
    used_proc = process_cpu_s(os.getpid()) - before_proc
    used_own = own_cpu_s() - before_own
    assert used_own >= 0.3
    assert abs(used_proc - used_own) < 0.05  # clock ticks are 10 ms


def test_meter_reports_a_busy_child_and_drops_a_finished_one():
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.process_time() + 0.4\n"
                             "while time.process_time() < end: pass\nprint('done', flush=True)\n"
                             "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        meter = CpuMeter({"busy": busy.pid, "gone": gone.pid})
        meter.start()
        assert busy.stdout.readline().strip() == "done"
        cores = meter.stop()
    finally:
        busy.stdin.close()
        busy.wait()
    assert set(cores) == {"client", "busy"}
    assert cores["busy"] > 0.1  # it spent its CPU time inside the measured window, mostly
