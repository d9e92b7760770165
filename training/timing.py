"""Timing and memory for the benchmark scripts: medians of whole calls after a warm-up, several systems taking
turns; a process's peak resident memory."""

import resource
import statistics
import time


def interleaved_medians(calls: dict, repeats: int, on_round=None) -> dict:
    """Median milliseconds of each call over `repeats` rounds after one warm-up round. Within a round the calls take
    turns, so a drift of the machine's speed touches every one of them alike and their ratios stay fair.
    `on_round()`, if given, is called after each round (a progress bar)."""
    timings = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_index:
                timings[name].append(time.perf_counter() - started)
        if on_round is not None:
            on_round()
    return {name: 1000 * statistics.median(values) for name, values in timings.items()}


def reset_peak_rss():
    """Linux keeps a process's peak RSS across fork and exec (getrusage(2)), so a child started by a large parent
    would report the parent's peak: reset this process's high-water mark first (to its current RSS)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
