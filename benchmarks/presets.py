"""Is ``jit_compile: auto`` the fast choice? Every preset trained for a fixed number of steps with
``jit_compile`` auto, true and false, on this machine.

Each preset trains its own model and training settings (batch size, optimizer) through ``ufl.trainers.train``
on random DATA/ of the preset's sample shape (28x28 for whole-image presets; labels where the model needs
them), written beforehand and not timed. Throughput is the loop's steady ``examples_per_second`` (the first
two executions, which compile, are left out); each setting runs ``--rounds`` times in rotated order and its
best round counts, so that a busy moment of a shared machine does not decide. Prints one JSON line: per
preset the ex/s of each setting, what ``auto`` chose, and ``auto`` against the best setting (about 1.0 when
auto picked the fastest).

    .venv/bin/python benchmarks/presets.py [--steps 40] [--steps-per-execution 5] [--rounds 2]
                                           [--presets conv-ae dense-ae]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

SETTINGS = ("auto", True, False)


def write_data(data_dir: str, preset, rows: int) -> None:
    from ufl.pipeline.tfrecord import write_data_dir
    from ufl.trainers.registry import model_class

    side = preset.data.get("patch_size") or 28
    rng = np.random.default_rng(0)
    patches = {"train": rng.uniform(size=(rows, side * side)).astype(np.float32)}
    labels = None
    if model_class(preset.model["kind"]).requires_labels:
        labels = {"train": np.arange(rows) % 10}
    write_data_dir(data_dir, patches, patch_size=(side, side), channels=1, labels=labels)


def train_steps(preset, data_dir: str, out: str, jit_compile, steps: int, steps_per_execution: int) -> dict:
    from ufl.config.train import TrainConfig
    from ufl.trainers import train

    settings = {key: value for key, value in preset.train.items() if key in ("batch_size", "optimizer")}
    config = TrainConfig(preset=preset.name, data=data_dir, out=out, model=preset.model, epochs=10_000,
                         max_steps=steps, steps_per_execution=steps_per_execution, checkpoint_every=10 * steps,
                         jit_compile=jit_compile, restart=True, **settings)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the loop's epoch lines; stdout holds the JSON line only
        metrics = train(config)
    with open(os.path.join(out, "config.json"), encoding="utf-8") as handle:
        resolved = json.load(handle)["jit_compile"]
    return {"examples_per_second": metrics["examples_per_second"], "jit_compile": resolved,
            "wall_seconds": time.perf_counter() - started}


def measure_preset(preset, workdir: str, steps: int, steps_per_execution: int, rounds: int) -> dict:
    batch_size = preset.train.get("batch_size", 256)
    data_dir = os.path.join(workdir, preset.name, "data")
    write_data(data_dir, preset, rows=batch_size * steps_per_execution * 2)
    figures = {}
    for round_index in range(rounds):
        order = SETTINGS[round_index % len(SETTINGS):] + SETTINGS[:round_index % len(SETTINGS)]
        for setting in order:
            result = train_steps(preset, data_dir, os.path.join(workdir, preset.name, f"run-{setting}"), setting,
                                 steps, steps_per_execution)
            name = str(setting).lower()
            figures[f"{name}_examples_per_second"] = max(figures.get(f"{name}_examples_per_second", 0.0),
                                                         result["examples_per_second"])
            figures[f"{name}_wall_seconds"] = min(figures.get(f"{name}_wall_seconds", float("inf")),
                                                  result["wall_seconds"])
            if setting == "auto":
                figures["auto_chose_jit_compile"] = result["jit_compile"]
    best = max(figures["true_examples_per_second"], figures["false_examples_per_second"])
    figures["auto_vs_best"] = figures["auto_examples_per_second"] / best
    return figures


def main() -> None:
    from ufl.trainers.presets import all_presets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    parser.add_argument("--steps-per-execution", type=int, default=5,
                        help="steps per compiled execution (default 5; the first two executions are warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting; the best counts (default 2)")
    parser.add_argument("--presets", nargs="*", help="presets to measure (default: all)")
    args = parser.parse_args()
    presets = all_presets()
    names = args.presets or sorted(presets)
    result = {"benchmark": "presets", "steps": args.steps, "steps_per_execution": args.steps_per_execution,
              "rounds": args.rounds,
              "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="ufl-bench-presets-") as workdir:
        for name in names:
            for key, value in measure_preset(presets[name], workdir, args.steps, args.steps_per_execution,
                                            args.rounds).items():
                result[f"{name}_{key}"] = value
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
