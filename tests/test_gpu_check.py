"""The GPU check's whole path, in its CPU smoke mode: the script that a short GPU loan runs must not rot."""

import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_smoke_mode_runs_every_part_and_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.gpu_check", "--smoke", "--output_dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and set(report["parts"]) == {"tests", "speed", "training"}
    assert all(part["returncode"] == 0 for part in report["parts"].values())
    assert "1 passed" in report["parts"]["tests"]["output_tail"]
    systems = {row["system"] for row in report["speed"]}
    assert systems == {"floor", "deer-0", "deer-1", "deer-2", "deer-4", "ar"}
    assert all(row["rounds"]["passes_per_round_b1"] == 3 for row in report["speed"])  # realistic rounds
    assert {row["system"] for row in report["training"]} == {"deer", "ar"}
    assert all(row["steps_per_second"] > 0 for row in report["training"])
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "tests: ok" in markdown and "AR / deer-2" in markdown and "DEER / AR step time" in markdown
