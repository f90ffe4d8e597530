"""The reference experiments on their own data, each printed beside its published figure.

Every preset is trained by ``ufl train`` (each step in its own process; rerunning with the same
``--workdir`` resumes stopped runs and reports finished ones without running them again) on the data its
reference used, scored on the original test set. ``dense-ae-keras`` runs the Keras blog's own code in
tf_keras' ``fit`` beside ``dense-ae``, as a check of the recipe independent of ufl:

- MNIST (``builtin:mnist``): the 10,000 test digits are the eval split; the training digits are the
  reference's: all 60,000 (dense-ae, conv-ae), the first 54,000 (stacked-ae: Keras' ``validation_split=0.1``
  keeps the last 10% for validation), the first 50,000 (the Lasagne CNNs keep the last 10,000 for
  validation);
- Fashion-MNIST (``builtin:fashion-mnist``): its official 60,000 / 10,000 split.

DATA/ holds whole images as raw pixels in [0, 1], what ``ufl preprocess --extract full --normalize none
--eval-split source`` writes, with the training split cut to the reference's. Linear probes go through
``ufl evaluate linear-probe --split source`` (train split → test split). The datasets are found as the CLI
finds them (``UFL_DATASETS``, Keras' cache, ...).

  benchmarks/reproduce.py --workdir work/reproduce                     # everything (about 50 min on 2 idle cores)
  benchmarks/reproduce.py --workdir W --only stacked-ae stacked-ae-scratch
  benchmarks/reproduce.py --workdir W --readme --docs                  # also README's Results and docs/ figures
  benchmarks/reproduce.py --workdir W --epochs 1                       # a quick pass (figures not comparable)

Prints one line per experiment (ours beside the reference) and, at the end, one JSON line with everything.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DOCS = os.path.join(REPO, "docs", "reproduce")
README = os.path.join(REPO, "README.md")

#: DATA/ variants: source, training images kept (the first N of the source's train split, None: all).
DATASETS = {"mnist": ("builtin:mnist", None), "mnist-54k": ("builtin:mnist", 54000),
            "mnist-50k": ("builtin:mnist", 50000), "fashion-mnist": ("builtin:fashion-mnist", None)}

#: The sparse-coding probe recipe (Coates & Ng's single-layer pipeline): patch side, atoms, grid stride,
#: pooling regions per side, patches per training image.
PROBE = {"patch_size": 6, "n_atoms": 256, "grid_stride": 2, "pool_grid": 4, "patches_per_image": 5}


def _eval(key: str) -> Callable[[dict, str], Optional[float]]:
    return lambda metrics, run_dir: metrics.get("eval", {}).get(key)


def _test_accuracy(metrics: dict, run_dir: str) -> float:
    """Accuracy of a RUN/'s classifier on every MNIST test digit (the loop's eval drops a last partial batch)."""
    import numpy as np

    from ufl.pipeline import load_images
    from ufl.trainers.run_dir import load_trained_model

    images, labels = load_images("builtin:mnist", split="test")
    classifier = load_trained_model(run_dir).model.classifier_model()
    predictions = classifier.predict(images.reshape(len(images), -1), batch_size=1000, verbose=0).argmax(-1)
    return float(np.mean(predictions == labels))


#: preset -> data variant, figures (label, published value, how to read ours from metrics.json), extra
#: ``ufl train`` options, the reference's data, and the seeds to train (a figure is then their mean: the
#: stacked autoencoders' last-epoch accuracy moves by a quarter of a point from seed to seed).
EXPERIMENTS: Dict[str, dict] = {
    "stacked-ae": {"data": "mnist-54k", "figures": [("test accuracy", 0.978, _test_accuracy)], "seeds": (0, 1, 2),
                   "reference_data": "MNIST 54k train (10% of 60k for validation) / 10k test"},
    "stacked-ae-scratch": {"data": "mnist-54k", "seeds": (0, 1, 2),
                           "figures": [("test accuracy, same network from scratch", None, _test_accuracy)],
                           "reference_data": "as stacked-ae"},
    "dense-ae": {"data": "mnist", "figures": [("val binary cross-entropy", "0.09–0.10", _eval("loss")),
                                              ("val MSE", None, _eval("reconstruction_error"))],
                 "reference_data": "MNIST 60k train / 10k test as validation"},
    "conv-ae": {"data": "mnist", "figures": [("val binary cross-entropy", None, _eval("loss"))],
                "train_options": ["--set", "jit_compile=false"],
                "reference_data": "MNIST 60k train / 10k test as validation"},
    "deep-sparse-ae": {"data": "fashion-mnist", "figures": [("val MSE", 0.032, _eval("reconstruction_error")),
                                                            ("val objective (MSE + L1)", None, _eval("loss"))],
                       "reference_data": "Fashion-MNIST 60k / 10k (official split)"},
    "deep-sparse-ae-kl": {"data": "fashion-mnist",
                          "figures": [("val MSE", None, _eval("reconstruction_error")),
                                      ("mean code activation (target 0.05)", None, _eval("mean_activation"))],
                          "reference_data": "Fashion-MNIST 60k / 10k (official split)"},
    "denoising-ae": {"data": "mnist", "figures": [("val MSE, clean digits rebuilt from noisy ones (std 0.5)", None,
                                                   _eval("reconstruction_error"))],
                     "reference_data": "MNIST 60k train / 10k test as validation"},
    "tied-conv-ae": {"data": "mnist", "figures": [("val MSE", None, _eval("reconstruction_error"))],
                     "train_options": ["--set", "jit_compile=false"],
                     "reference_data": "MNIST 60k train / 10k test as validation"},
}
CNN = {"standard": (0.5675, 0.9676), "modified": (0.7251, 0.9603)}


def _ours(row: dict, prefix: str) -> Optional[float]:
    return next((f["ours"] for f in row.get("figures", []) if f["figure"].startswith(prefix)), None)


#: The project's goals where they differ from "as published": experiment -> (figure label prefix, goal as
#: written in the table, whether a row meets it).
GOALS: Dict[str, tuple] = {
    "stacked-ae": ("test accuracy", "≥ 0.978", lambda row: _ours(row, "test accuracy") >= 0.978),
    "probe-mnist": ("sparse-coding features", "≥ 0.985",
                    lambda row: _ours(row, "sparse-coding features") >= 0.985),
    "probe-fashion-mnist": ("sparse-coding features", "≥ raw pixels + 0.02",
                            lambda row: _ours(row, "sparse-coding features") >= _ours(row, "raw pixels") + 0.02),
}


def goal_cell(row: dict, figure: dict) -> str:
    """The goal and whether the row meets it, on the row's first figure the goal names; else empty."""
    name = row.get("experiment")
    if name not in GOALS or figure["ours"] is None:
        return ""
    first = next((f for f in row.get("figures", []) if f["figure"].startswith(GOALS[name][0])), None)
    if first is not figure:
        return ""
    return f"{GOALS[name][1]}: {'met' if GOALS[name][2](row) else '**not met**'}"


class Runner:
    """Runs ``ufl`` commands in their own processes, logging to WORKDIR/reproduce.log."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.log = os.path.join(workdir, "reproduce.log")

    def ufl(self, *arguments: str) -> str:
        command = [sys.executable, "-m", "ufl.cli", *arguments]
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write("$ ufl " + " ".join(arguments) + "\n")
            handle.flush()
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=handle, text=True, cwd=REPO)
            handle.write(result.stdout)
        if result.returncode != 0:
            raise RuntimeError(f"'ufl {' '.join(arguments[:2])}' failed with exit code {result.returncode} "
                               f"(see {self.log})")
        return result.stdout

    def json_output(self, *arguments: str) -> dict:
        lines = [line for line in self.ufl(*arguments).splitlines() if line.startswith("{")]
        return json.loads(lines[-1])


def prepare_data(variant: str, workdir: str) -> str:
    """DATA/ of whole images for ``variant`` (made once, written under a temporary name then renamed)."""
    from ufl.pipeline import load_images
    from ufl.pipeline.tfrecord import write_data_dir

    data_dir = os.path.join(workdir, "data-" + variant)
    if os.path.exists(os.path.join(data_dir, "metadata.json")):
        return data_dir
    source, keep = DATASETS[variant]
    train_images, train_labels = load_images(source, split="train")
    test_images, test_labels = load_images(source, split="test")
    keep = keep or len(train_images)
    partial = data_dir + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    write_data_dir(partial, {"train": train_images[:keep].reshape(keep, -1),
                             "eval": test_images.reshape(len(test_images), -1)},
                   patch_size=train_images.shape[1:3], channels=train_images.shape[3],
                   labels={"train": train_labels[:keep], "eval": test_labels}, source=source, num_shards=4)
    os.replace(partial, data_dir)
    return data_dir


def run_preset(runner: Runner, name: str, epochs: Optional[int]) -> dict:
    """Trains ``name`` once per seed of its experiment (RUN/ ``run-NAME`` for seed 0, ``run-NAME-seedS`` for
    the others); each figure is the mean over the seeds, followed by the seeds' own values."""
    experiment = EXPERIMENTS[name]
    data_dir = prepare_data(experiment["data"], runner.workdir)
    seeds = experiment.get("seeds", (0,))
    values: Dict[str, List[float]] = {label: [] for label, _, _ in experiment["figures"]}
    train_seconds = []
    for seed in seeds:
        run_dir = os.path.join(runner.workdir, "run-" + name + (f"-seed{seed}" if seed else ""))
        runner.ufl("train", name, "--data", data_dir, "--out", run_dir, *experiment.get("train_options", []),
                   *(["--set", f"seed={seed}"] if seed else []), *(["--epochs", str(epochs)] if epochs else []))
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
            metrics = json.load(handle)
        train_seconds.append(metrics.get("wall_seconds"))
        for label, _, read in experiment["figures"]:
            values[label].append(read(metrics, run_dir))
    figures = []
    for label, reference, _ in experiment["figures"]:
        ours = values[label]
        if len(seeds) == 1:
            figures.append({"figure": label, "reference": reference, "ours": ours[0]})
            continue
        figures += [{"figure": f"{label}, mean of seeds {', '.join(map(str, seeds))}", "reference": reference,
                     "ours": sum(ours) / len(ours)},
                    {"figure": f"{label}, per seed", "reference": None,
                     "ours": " / ".join(format_value(value) for value in ours)}]
    return {"figures": figures, "epochs": metrics.get("epochs"), "train_seconds": train_seconds,
            "run": os.path.join(runner.workdir, "run-" + name), "seeds": list(seeds),
            "data": experiment["data"], "reference_data": experiment["reference_data"]}


def run_keras_dense_ae(runner: Runner, epochs: Optional[int]) -> dict:
    """The Keras blog's dense autoencoder as published, run by tf_keras' own ``fit`` (the peer of
    ``dense-ae``): 784-32-784, Adadelta (Keras 2: lr 1.0, rho 0.95, epsilon 1e-7), binary cross-entropy,
    batch 256, 50 epochs, shuffled, the test digits as validation data."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from ufl.pipeline import load_images

    train, _ = load_images("builtin:mnist", split="train")
    test, _ = load_images("builtin:mnist", split="test")
    train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    tf.random.set_seed(0)
    inputs = tf_keras.Input((784,))
    outputs = tf_keras.layers.Dense(784, activation="sigmoid")(tf_keras.layers.Dense(32, activation="relu")(inputs))
    model = tf_keras.Model(inputs, outputs)
    model.compile(optimizer=tf_keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7),
                  loss="binary_crossentropy")
    history = model.fit(train, train, epochs=epochs or 50, batch_size=256, shuffle=True,
                        validation_data=(test, test), verbose=0).history
    mse = float(np.mean(np.square(model.predict(test, batch_size=1000, verbose=0) - test)))
    return {"figures": [{"figure": "val binary cross-entropy, the published code in tf_keras fit",
                         "reference": "0.09–0.10", "ours": history["val_loss"][-1]},
                        {"figure": "val MSE, the published code in tf_keras fit", "reference": None, "ours": mse}],
            "data": "mnist", "reference_data": "MNIST 60k train / 10k test as validation"}


def run_cnn(runner: Runner, epochs: Optional[int]) -> dict:
    data_dir = prepare_data("mnist-50k", runner.workdir)
    table = runner.json_output("evaluate", "cnn-branch", "--data", data_dir, "--workdir",
                               os.path.join(runner.workdir, "cnn"), "--set", "jit_compile=false", "--json",
                               *(["--epochs", str(epochs)] if epochs else []))
    figures = []
    for model, (first, last) in CNN.items():
        row = table[model]
        figures += [{"figure": f"{model} CNN: test accuracy after epoch 1", "reference": first,
                     "ours": row["epoch_1_accuracy"]},
                    {"figure": f"{model} CNN: test accuracy after epoch {row['epochs']}", "reference": last,
                     "ours": row["last_epoch_accuracy"]},
                    {"figure": f"{model} CNN: seconds per epoch", "reference": None,
                     "ours": row["seconds_per_epoch"]}]
    return {"figures": figures, "data": "mnist-50k",
            "reference_data": "MNIST 50k train / 10k validation / 10k test"}


def run_probe(runner: Runner, source: str, epochs: Optional[int]) -> dict:
    """Sparse-coding features of ``source`` (dictionary learned on patches of its train split) against raw
    pixels, both by the same logistic regression, train split → test split."""
    data_dir = os.path.join(runner.workdir, f"patches-{source.split(':')[-1]}")
    if not os.path.exists(os.path.join(data_dir, "metadata.json")):
        runner.ufl("preprocess", "--source", source, "--out", data_dir, "--eval-split", "source", "--patch-size",
                   str(PROBE["patch_size"]), "--patches-per-image", str(PROBE["patches_per_image"]),
                   "--min-std", "0.02", "--normalize", "contrast,zca")
    run_dir = os.path.join(runner.workdir, f"run-sparse-coding-{source.split(':')[-1]}")
    runner.ufl("train", "sparse-coding", "--data", data_dir, "--out", run_dir,
               "--set", f"model.n_atoms={PROBE['n_atoms']}", *(["--epochs", str(epochs)] if epochs else []))
    probe = runner.json_output("evaluate", "linear-probe", "--run", run_dir, "--data", source, "--split",
                               "source", "--grid-stride", str(PROBE["grid_stride"]), "--pool-grid",
                               str(PROBE["pool_grid"]), "--json")
    return {"figures": [{"figure": f"sparse-coding features ({probe['feature_dim']}): test accuracy",
                         "reference": None, "ours": probe["feature_accuracy"]},
                        {"figure": "raw pixels: test accuracy", "reference": None, "ours": probe["raw_accuracy"]}],
            "data": source, "reference_data": f"{source}, its own train / test split", "probe": probe}


def run_experiment(runner: Runner, name: str, epochs: Optional[int]) -> dict:
    """Runs one experiment; a finished one's row is kept in WORKDIR/results/NAME.json for later reports."""
    began = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    try:
        if name == "cnn-branch":
            row = run_cnn(runner, epochs)
        elif name == "dense-ae-keras":
            row = run_keras_dense_ae(runner, epochs)
        elif name.startswith("probe-"):
            row = run_probe(runner, "builtin:" + name[len("probe-"):], epochs)
        else:
            row = run_preset(runner, name, epochs)
    except (RuntimeError, OSError, KeyError) as error:
        row = {"error": str(error)}
    row.update(experiment=name, seconds=round(time.perf_counter() - began, 1), epochs_override=epochs,
               started=started, load_average_after=round(os.getloadavg()[0], 1))
    if "error" not in row:
        from ufl.config.base import atomic_write_text

        atomic_write_text(os.path.join(runner.workdir, "results", name + ".json"), json.dumps(row, default=str))
    return row


def finished_row(workdir: str, name: str, epochs: Optional[int]) -> Optional[dict]:
    """The row of an experiment this WORKDIR already finished with the same ``--epochs``, else None."""
    path = os.path.join(workdir, "results", name + ".json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        row = json.load(handle)
    return row if row.get("epochs_override") == epochs else None


def copy_figures(rows: List[dict]) -> List[str]:
    """Copies each run's plots (filters, reconstructions, feature maps) into docs/reproduce/."""
    os.makedirs(DOCS, exist_ok=True)
    written = []
    for row in rows:
        plots = os.path.join(row.get("run", ""), "plots")
        for name in ("filters.png", "reconstructions.png", "feature_maps.png"):
            path = os.path.join(plots, name)
            if os.path.exists(path):
                target = os.path.join(DOCS, f"{row['experiment']}-{name}")
                shutil.copyfile(path, target)
                written.append(os.path.relpath(target, REPO))
    return written


def format_value(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_section(rows: List[dict], figures: List[str]) -> str:
    dates = sorted(row["started"] for row in rows if row.get("started"))
    loads = [row["load_average_after"] for row in rows if "load_average_after" in row]
    when = f"{dates[0]} – {dates[-1]} UTC" if dates else "—"
    lines = [f"By `benchmarks/reproduce.py --workdir W --readme --docs` (it finds the datasets as `ufl` does, "
             f"e.g. in `UFL_DATASETS`; a rerun reports finished experiments), experiments run {when} on an "
             f"{platform.machine()} "
             f"CPU with {os.cpu_count()} cores (load average after each experiment "
             f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f}), "
             f"{sum(row.get('seconds', 0) for row in rows) / 60:.0f} min in all. Each preset as published "
             "(network, optimizer, batch, epochs), scored on the original test set.", "",
             "| experiment | figure | published | ours | goal | our data | minutes |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        minutes = f"{row['seconds'] / 60:.1f}" if "seconds" in row else "—"
        for figure in row.get("figures") or [{"figure": "failed", "reference": None, "ours": row.get("error")}]:
            lines.append(f"| `{row['experiment']}` | {figure['figure']} | {format_value(figure['reference'])} | "
                         f"{format_value(figure['ours'])} | {goal_cell(row, figure)} | "
                         f"{row.get('reference_data', '')} | {minutes} |")
    if figures:
        lines += ["", "Figures (`docs/reproduce/`): " + ", ".join(f"[{os.path.basename(f)}]({f})" for f in figures)]
        lines += ["", *(f"![{os.path.basename(f)[:-4]}]({f})" for f in figures if f.endswith("feature_maps.png"))]
    return "\n".join(lines)


def write_readme_section(text: str) -> None:
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    begin, end = "<!-- section: results -->\n", "<!-- /section: results -->"
    start, stop = readme.index(begin) + len(begin), readme.index(end)
    from ufl.config.base import atomic_write_text

    atomic_write_text(README, readme[:start] + text + "\n" + readme[stop:])


def main() -> int:
    choices = list(EXPERIMENTS)
    choices.insert(choices.index("dense-ae") + 1, "dense-ae-keras")
    choices += ["cnn-branch", "probe-mnist", "probe-fashion-mnist"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="DATA/ and RUN/ folders; a rerun reuses and resumes them")
    parser.add_argument("--only", nargs="*", choices=choices, help="experiments to run (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override every preset's epochs (quick passes)")
    parser.add_argument("--rerun", action="store_true",
                        help="run finished experiments again (default: report their recorded results)")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's Results section")
    parser.add_argument("--docs", action="store_true", help="copy the runs' figures into docs/reproduce/")
    args = parser.parse_args()
    from ufl import quiet

    with quiet.terminal("reproduce"):  # TensorFlow's and Beam's start-up notices stay off this terminal
        return reproduce(args, choices)


def reproduce(args: argparse.Namespace, choices: List[str]) -> int:
    runner = Runner(os.path.abspath(args.workdir))
    os.makedirs(runner.workdir, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for name in args.only or choices:
        row = None if args.rerun else finished_row(runner.workdir, name, args.epochs)
        if row is None:
            print(f"# {name}: running (log: {runner.log})", file=sys.stderr, flush=True)
            row = run_experiment(runner, name, args.epochs)
        rows.append(row)
        figures = "; ".join(f"{f['figure']}: ours {format_value(f['ours'])} vs published "
                            f"{format_value(f['reference'])}" for f in row.get("figures", []))
        print(f"{name:<20} {figures or row.get('error')}  ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    figures = copy_figures(rows) if args.docs else []
    if args.readme:
        write_readme_section(results_section(rows, figures))
    print(json.dumps({"benchmark": "reproduce", "epochs_override": args.epochs, "workdir": runner.workdir,
                      "seconds": round(seconds, 1), "load_average": [round(v, 2) for v in os.getloadavg()],
                      "experiments": rows}, default=str))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
