"""Everything a GPU should check, in one command sized for a short loan of a GPU machine (under 8 minutes):

    python -m experiments.gpu_check --output_dir OUT [--repeats 3] [--smoke]

1. the `gpu`-marked tests (tests/test_gpu.py) on the device: the CPU's ids in float32, half precision, training
   steps, pruning / trimming / save / load / compiled passes there, clear errors instead of device-side asserts, and
   (where the training extras are installed: `make gpu-dial-install`) `deer-train --fsdp` of a model with levels
   under the Trainer's FSDP2, one process;
2. the speed tables (`experiments.bench --tables speed`): MiniLM and BERT-base shapes at batch 1, 32 and 128, and
   the XLM-R shape (BERT-base with a 250,002-token vocabulary) at batch 64, DEER at
   0 / 1 / 2 / 4 realistic rounds (every round deletes, inserts and fills) against BERT2BERT greedy with its KV
   cache, in float32 and bfloat16, DEER eager and compiled (on CUDA every pass padded to a length bucket, each
   bucket's CUDA graph captured once and replayed: `compile_passes(buckets=LENGTH_BUCKETS, mode="reduce-overhead")`;
   each row says `compiled`), timings synchronised with the device;
3. training throughput (`experiments.bench --tables training`): DEER and BERT2BERT optimizer steps per second at
   batch 64 on the MiniLM shape under bfloat16 autocast.

It runs on whatever device is there (CUDA if present) and writes OUT/gpu_check.json and OUT/gpu_check.md: the
device, each part's outcome and its table, rewritten after every part, so that a loan cut short still returns what
ran. Each part runs in its own process (a failure is recorded and the next part still runs) and writes its own
OUT/<part>.json; run again into the same folder, the command skips the parts that succeeded (resumable per table;
`--parts` picks some). On CUDA the speed rows carry each call's peak device memory. `--smoke` runs the same path on
the CPU in under a minute (the tiny shape, batch 1, one repeat, no compiling, one test), so the script cannot rot
where no GPU is.

Needs torch, transformers and pytest, nothing else of the training extras (the GPU machine has no network).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_info(device: str) -> dict:
    info = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def run(command: list[str], env: dict | None = None) -> dict:
    """One part, in its own process from the repository root; its outcome and the tail of what it printed."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    output = (result.stdout + result.stderr).strip()
    print(output[-3000:], flush=True)
    return {
        "command": " ".join(command),
        "returncode": result.returncode,
        "seconds": time.perf_counter() - started,
        "output_tail": output[-3000:],
        "stdout": result.stdout.strip(),
    }


def parts(args, device: str) -> dict[str, tuple[list[str], dict | None]]:
    """Each part's command (and environment), in the order they run; each timing part writes OUT/<part>.json."""
    out = args.output_dir

    def bench(table: str, name: str, *flags: str) -> list[str]:
        output = os.path.join(out, f"{name}.json")
        return [
            sys.executable,
            "-m",
            "experiments.bench",
            "--tables",
            table,
            "--device",
            device,
            *flags,
            "--output",
            output,
        ]

    tests = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-W", "default", "tests/test_gpu.py"]
    # -W default: on another machine's versions a new warning is shown, not turned into a failure.
    if args.smoke:
        quick = ["--dtypes", "float32", "--repeats", "1", "--threads", "1"]
        return {
            "tests": ([*tests, "-k", "out_of_vocabulary"], {"DEER_TEST_DEVICE": device}),
            "speed-tiny": (bench("speed", "speed-tiny", "--shapes", "tiny", "--batch_sizes", "1", *quick), None),
            "training": (
                bench("training", "training", "--shapes", "tiny", "--training_batch_size", "4", *quick),
                None,
            ),
        }
    timing = ["--dtypes", "float32", "bfloat16", "--speed_compiled", "--repeats", str(args.repeats)]
    return {
        "tests": (tests, {"DEER_TEST_DEVICE": device}),
        "speed-minilm": (
            bench("speed", "speed-minilm", "--shapes", "minilm", "--batch_sizes", "1", "32", "128", *timing),
            None,
        ),
        "speed-bert-base": (
            bench("speed", "speed-bert-base", "--shapes", "bert-base", "--batch_sizes", "1", "32", "128", *timing),
            None,
        ),
        "speed-xlm-r": (bench("speed", "speed-xlm-r", "--shapes", "xlm-r", "--batch_sizes", "64", *timing), None),
        "training": (
            bench(
                "training", "training", "--shapes", "minilm", "--dtypes", "bfloat16", "--repeats", str(args.repeats)
            ),
            None,
        ),
    }


def write_report(args, report: dict):
    """OUT/gpu_check.json (the device, each part's outcome, the rows of each table) and OUT/gpu_check.md."""
    for name in report["parts"]:
        path = os.path.join(args.output_dir, f"{name}.json")
        if name != "tests" and os.path.exists(path):
            with open(path) as handle:
                table = "speed" if name.startswith("speed") else "training"
                report.setdefault("tables", {})[name] = json.load(handle).get(table, [])
    with open(os.path.join(args.output_dir, "gpu_check.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    device = report["device"]
    summary = [f"device: {report.get('gpu', device)} ({device}), torch {report['torch']}, {report['date']}"]
    for name, part in report["parts"].items():
        last = part["output_tail"].splitlines()[-1] if part["output_tail"] else ""
        outcome = "ok" if part["returncode"] == 0 else "FAILED"
        summary.append(f"{name}: {outcome} in {part['seconds']:.0f} s ({last.strip()[:200]})")
    tables = [part["stdout"] for name, part in report["parts"].items() if name != "tests" and part["returncode"] == 0]
    with open(os.path.join(args.output_dir, "gpu_check.md"), "w") as handle:
        handle.write("\n".join(summary) + "\n\n" + "\n\n".join(tables) + "\n")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=None, help="run only these parts (default: every part)")
    parser.add_argument("--smoke", action="store_true", help="the whole path on the CPU in seconds (for CI)")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    report_path = os.path.join(args.output_dir, "gpu_check.json")
    report = {**device_info(device), "parts": {}}
    if os.path.exists(report_path):  # a rerun in the same folder: keep what succeeded, run the rest
        with open(report_path) as handle:
            earlier = json.load(handle)
        report["parts"] = {name: part for name, part in earlier.get("parts", {}).items() if part["returncode"] == 0}
    for name, (command, env) in parts(args, device).items():
        if name in report["parts"] or (args.parts and name not in args.parts):
            continue
        report["parts"][name] = run(command, env)
        summary = write_report(args, report)  # after every part: a loan cut short still returns what ran
    summary = write_report(args, report)
    print("\n".join(summary))
    if any(part["returncode"] for part in report["parts"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
