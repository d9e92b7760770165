"""The GPU check's whole path, in its CPU smoke mode: the script that a short GPU loan runs must not rot."""

import json
import os
import shutil
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_check(output_dir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.gpu_check", "--smoke", "--output_dir", str(output_dir), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )


def test_gpu_check_smoke_mode_runs_every_part_and_writes_its_report(tmp_path):
    result = gpu_check(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and list(report["parts"]) == ["tests", "speed-tiny", "training"]
    assert all(part["returncode"] == 0 for part in report["parts"].values())
    assert "1 passed" in report["parts"]["tests"]["output_tail"]
    speed, training = report["tables"]["speed-tiny"], report["tables"]["training"]
    assert {row["system"] for row in speed} == {"floor", "deer-0", "deer-1", "deer-2", "deer-4", "ar"}
    assert all(row["rounds"]["passes_per_round_b1"] == 3 for row in speed)  # realistic rounds
    assert all(row["compiled"] is False for row in speed)
    assert {row["system"] for row in training} == {"deer", "ar"}
    assert all(row["steps_per_second"] > 0 for row in training)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "tests: ok" in markdown and "AR / deer-2" in markdown and "DEER / AR step time" in markdown
    # Run again into the same folder: what succeeded is kept, not run again (a loan cut short goes on from there).
    seconds = {name: part["seconds"] for name, part in report["parts"].items()}
    (tmp_path / "training.json").unlink()
    report["parts"]["training"]["returncode"] = 1  # as if the training part had failed
    (tmp_path / "gpu_check.json").write_text(json.dumps(report))
    assert gpu_check(tmp_path).returncode == 0
    again = json.loads((tmp_path / "gpu_check.json").read_text())
    assert again["parts"]["speed-tiny"]["seconds"] == seconds["speed-tiny"]
    assert again["parts"]["training"]["returncode"] == 0 and (tmp_path / "training.json").exists()


def test_gpu_dial_smoke_mode_trains_the_three_runs_and_writes_the_dial(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        shutil.copy(os.path.join(REPO, "tests", "fixtures", f"bible-de-en.{split}.jsonl"), data / f"{split}.jsonl")
    output = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.gpu_dial",
            "--smoke",
            "--data_dir",
            str(data),
            "--output_dir",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((output / "dial-minilm.json").read_text())
    assert report["device"] == "cpu" and report["training"]["steps"] == 4
    assert all(report["training"][system]["returncode"] == 0 for system in ("deer-levels", "deer", "ar"))
    cells = report["cells"]
    # 4 round counts for the no-levels run and for each of 4 levels, and the AR model.
    assert len(cells) == 4 + 4 * 4 + 1 and cells[-1]["run"] == "ar"
    assert all(cell["b1_ms_per_sentence"] > 0 and cell["b32_ms"] > 0 for cell in cells)
    levels = report["levels"]
    assert set(levels["validation"]) == {"0", "0.25", "0.5", "0.75"} and "ar_validation" in levels
    assert set(levels["by_rounds"]["test"]["0.5"]) == {"0", "1", "2", "4"}
    assert set(report["rounds"][0]["validation"]) == {"0", "1", "2", "4"}
    assert (output / "dial-minilm.png").stat().st_size > 0 and "AR (BERT2BERT" in (
        output / "dial-minilm.md"
    ).read_text()
