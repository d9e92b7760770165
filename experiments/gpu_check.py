"""Everything a GPU should check, in one command sized for a short loan of a GPU machine (under 8 minutes):

    python -m experiments.gpu_check --output_dir OUT [--repeats 3] [--smoke]

1. the `gpu`-marked tests (tests/test_gpu.py) on the device: the CPU's ids in float32, half precision, training
   steps, pruning / trimming / save / load / compiled passes there, clear errors instead of device-side asserts;
2. the speed table (`experiments.bench --tables speed`): MiniLM and BERT-base shapes, batch 1, 32 and 128, DEER at
   0 / 1 / 2 / 4 realistic rounds (every round deletes, inserts and fills) against BERT2BERT greedy with its KV
   cache, in float32 and bfloat16, DEER eager and compiled (on CUDA every pass padded to a length bucket, each
   bucket's CUDA graph captured once and replayed: `compile_passes(buckets=LENGTH_BUCKETS, mode="reduce-overhead")`;
   each row says `compiled`), timings synchronised with the device;
3. training throughput (`experiments.bench --tables training`): DEER and BERT2BERT optimizer steps per second at
   batch 64 on the MiniLM shape under bfloat16 autocast.

It runs on whatever device is there (CUDA if present) and writes OUT/gpu_check.json and OUT/gpu_check.md: the
device, the tests' outcome and both tables. `--smoke` runs the same path on the CPU in under a minute (the tiny shape,
batch 1, one repeat, no compiling, one test), so the script cannot rot where no GPU is. Each part runs in its own
process: a failure is recorded and the next part still runs.

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the whole path on the CPU in seconds (for CI)")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    bench = os.path.join(args.output_dir, "bench.json")
    if args.smoke:
        tests = ["-k", "out_of_vocabulary"]
        timing = [
            "--shapes",
            "tiny",
            "--batch_sizes",
            "1",
            "--dtypes",
            "float32",
            "--repeats",
            "1",
            "--training_batch_size",
            "4",
            "--threads",
            "1",
        ]
    else:
        tests = []
        timing = [
            "--shapes",
            "minilm",
            "bert-base",
            "--batch_sizes",
            "1",
            "32",
            "128",
            "--dtypes",
            "float32",
            "bfloat16",
            "--speed_compiled",
            "--repeats",
            str(args.repeats),
        ]
    report = {**device_info(device), "parts": {}}
    # -W default: on another machine's versions a new warning is shown, not turned into a failure.
    report["parts"]["tests"] = run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-W", "default", "tests/test_gpu.py", *tests],
        env={"DEER_TEST_DEVICE": device},
    )
    report["parts"]["speed"] = run(
        [
            sys.executable,
            "-m",
            "experiments.bench",
            "--tables",
            "speed",
            "--device",
            device,
            *timing,
            "--output",
            bench,
        ]
    )
    training = os.path.join(args.output_dir, "training.json")
    shapes = ["--shapes", "tiny"] if args.smoke else ["--shapes", "minilm"]
    report["parts"]["training"] = run(
        [
            sys.executable,
            "-m",
            "experiments.bench",
            "--tables",
            "training",
            "--device",
            device,
            *timing,
            *shapes,
            "--dtypes",
            "float32" if args.smoke else "bfloat16",
            "--output",
            training,
        ]
    )
    for name, path in (("speed", bench), ("training", training)):
        if os.path.exists(path):
            with open(path) as handle:
                report[name] = json.load(handle)[name]
    with open(os.path.join(args.output_dir, "gpu_check.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    summary = [f"device: {report.get('gpu', device)} ({device}), torch {report['torch']}, {report['date']}"]
    for name, part in report["parts"].items():
        last = part["output_tail"].splitlines()[-1] if part["output_tail"] else ""
        summary.append(
            f"{name}: {'ok' if part['returncode'] == 0 else 'FAILED'} in {part['seconds']:.0f} s "
            f"({last.strip()[:200]})"
        )
    tables = [
        report["parts"][name]["stdout"] for name in ("speed", "training") if report["parts"][name]["returncode"] == 0
    ]
    with open(os.path.join(args.output_dir, "gpu_check.md"), "w") as handle:
        handle.write("\n".join(summary) + "\n\n" + "\n\n".join(tables) + "\n")
    print("\n".join(summary))
    if any(part["returncode"] for part in report["parts"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
