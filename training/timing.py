"""Timing for the benchmark scripts: medians of whole calls after a warm-up, several systems taking turns."""

import statistics
import time


def interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median milliseconds of each call over `repeats` rounds after one warm-up round. Within a round the calls take
    turns, so a drift of the machine's speed touches every one of them alike and their ratios stay fair."""
    timings = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_index:
                timings[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in timings.items()}
