"""Full-size reproductions of issue 5's experiments, each printed beside its published figure.

Every experiment goes through the CLI, each step in its own process: ``ufl preprocess`` (the preset's data
recipe; DATA/ shared between presets with the same recipe), ``ufl train PRESET`` (rerunning resumes a
stopped run), then the figures are read from RUN/metrics.json; ``ufl evaluate linear-probe`` adds probe
accuracies for some encoders and ``ufl evaluate cnn-branch`` runs the CNN comparison. Each experiment prints
one line (ours beside the reference); the end prints one JSON line with everything and, with ``--markdown``,
writes the results table used in README.

Our data differs from the references': ``builtin:mnist`` is a 10,000-digit subset of MNIST (train/eval split
by ``ufl preprocess --eval-fraction``, not the official 60k/10k), and Fashion-MNIST's 70,000 images are split by
``ufl preprocess``'s stable hash of each image's id (about 60k/10k, not the official split).

  benchmarks/reproduce.py                         # every experiment, full size (hours on 2 CPU cores)
  benchmarks/reproduce.py --only dense-ae stacked-ae stacked-ae-scratch --markdown results.md
  benchmarks/reproduce.py --epochs 2              # a quick pass over everything (figures not comparable)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FASHION = next((p for p in ("/work/shared/data/fashion_mnist.npz",
                            os.path.join(REPO, "..", "shared", "data", "fashion_mnist.npz")) if os.path.exists(p)),
               os.path.join(REPO, "..", "shared", "data", "fashion_mnist.npz"))
MNIST_NOTE = "10k-digit MNIST subset (ours: ~80/20 or 90/10 hash split) vs 60k/10k"
FASHION_NOTE = "Fashion-MNIST 70k split ~60k/10k by ufl preprocess's hash, not the official split"


def _eval(key: str) -> Callable[[dict], Optional[float]]:
    return lambda metrics: metrics.get("eval", {}).get(key)


#: preset -> figures: (label, reference value or text, how to read ours from metrics.json), data note,
#: linear-probe source (or None).
EXPERIMENTS: Dict[str, dict] = {
    "dense-ae": {"figures": [("val binary cross-entropy", 0.09, _eval("loss")),
                             ("val MSE", None, _eval("reconstruction_error"))],
                 "note": MNIST_NOTE, "probe": "builtin:mnist"},
    "deep-sparse-ae": {"figures": [("val MSE", 0.032, _eval("reconstruction_error")),
                                   ("val objective (MSE + L1)", None, _eval("loss"))],
                       "note": FASHION_NOTE, "probe": "fashion"},
    "deep-sparse-ae-kl": {"figures": [("code mean activation (target rho)", 0.05, _eval("mean_activation")),
                                      ("val MSE", None, _eval("reconstruction_error"))],
                          "note": FASHION_NOTE, "probe": "fashion"},
    "denoising-ae": {"figures": [("val MSE from noisy input", None, _eval("reconstruction_error"))],
                     "note": MNIST_NOTE, "probe": "builtin:mnist"},
    "stacked-ae": {"figures": [("test accuracy", 0.978, _eval("accuracy"))], "note": MNIST_NOTE, "probe": None},
    "stacked-ae-scratch": {"figures": [("test accuracy (no pretraining)", None, _eval("accuracy"))],
                           "note": MNIST_NOTE, "probe": None},
    "conv-ae": {"figures": [("val binary cross-entropy", 0.094, _eval("loss"))], "note": MNIST_NOTE,
                "probe": "builtin:mnist"},
    "tied-conv-ae": {"figures": [("val MSE", None, _eval("reconstruction_error"))], "note": MNIST_NOTE,
                     "probe": "builtin:mnist"},
    "foldiak": {"figures": [("mean activity (target p)", 0.05, _eval("sparsity")),
                            ("mean |correlation| between units", "≈0", _eval("mean_abs_correlation"))],
                "note": "patches of the built-in photos instead of the original's images", "probe": None},
    "cnn-branch": {"figures": [], "note": MNIST_NOTE, "probe": None},
}


def ufl(*arguments: str, log: str) -> subprocess.CompletedProcess:
    """Runs ``python -m ufl.cli ARGUMENTS`` in its own process, appending its output to ``log``."""
    command = [sys.executable, "-m", "ufl.cli", *arguments]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ ufl " + " ".join(arguments) + "\n")
        handle.flush()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=handle, text=True, cwd=REPO)
        handle.write(result.stdout)
    return result


def data_options(recipe: dict) -> List[str]:
    options = []
    for key, value in recipe.items():
        if key == "source" or value is None:
            continue
        options += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, (list, tuple))
                    else str(value)]
    return options


def resolve_source(source: str) -> str:
    return f"npz:{FASHION}" if "fashion_mnist.npz" in source else source


def prepare_data(preset, workdir: str, log: str) -> str:
    """DATA/ of the preset's recipe (made once per distinct recipe)."""
    recipe = dict(preset.data)
    source = resolve_source(recipe.pop("source"))
    key = json.dumps([source, recipe], sort_keys=True)
    data_dir = os.path.join(workdir, "data-" + hashlib.sha1(key.encode()).hexdigest()[:10])
    if not os.path.exists(os.path.join(data_dir, "metadata.json")):
        result = ufl("preprocess", "--source", source, "--out", data_dir, *data_options(recipe), log=log)
        if result.returncode != 0:
            raise RuntimeError(f"ufl preprocess failed for {preset.name} (see {log})")
    return data_dir


def linear_probe(run_dir: str, source: str, log: str) -> Optional[dict]:
    arguments = ["evaluate", "linear-probe", "--run", run_dir, "--json"]
    if source == "fashion":
        arguments += ["--data", f"npz:{FASHION}", "--max-images", "10000"]
    else:
        arguments += ["--data", source]
    result = ufl(*arguments, log=log)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if result.returncode == 0 and lines else None


def run_experiment(name: str, workdir: str, epochs: Optional[int], log: str, probes: bool = True) -> dict:
    from ufl.trainers.presets import get_preset

    experiment, start = EXPERIMENTS[name], time.perf_counter()
    preset = get_preset(name)
    row = {"preset": name, "description": preset.description, "source": preset.reference.get("source"),
           "note": experiment["note"], "figures": []}
    if name == "cnn-branch":
        arguments = ["evaluate", "cnn-branch", "--json"] + (["--epochs", str(epochs)] if epochs else [])
        result = ufl(*arguments, log=log)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"ufl evaluate cnn-branch failed (see {log})")
        table = json.loads(lines[-1])
        for model in ("standard", "modified"):
            for key in ("epoch_1_accuracy", "last_epoch_accuracy", "seconds_per_epoch"):
                reference = (preset.reference.get("standard_test_accuracy_after_12_epochs")
                             if (model, key) == ("standard", "last_epoch_accuracy") else None)
                row["figures"].append({"figure": f"{model} {key.replace('_', ' ')}", "reference": reference,
                                       "ours": table[model][key]})
    else:
        data_dir = prepare_data(preset, workdir, log)
        run_dir = os.path.join(workdir, "run-" + name)
        arguments = ["train", name, "--data", data_dir, "--out", run_dir]
        arguments += ["--epochs", str(epochs)] if epochs else []
        if ufl(*arguments, log=log).returncode != 0:
            raise RuntimeError(f"ufl train {name} failed (see {log})")
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
            metrics = json.load(handle)
        row["epochs"], row["examples_per_second"] = metrics.get("epochs"), metrics.get("examples_per_second")
        for label, reference, read in experiment["figures"]:
            row["figures"].append({"figure": label, "reference": reference, "ours": read(metrics)})
        if experiment["probe"] and probes:
            probe = linear_probe(run_dir, experiment["probe"], log)
            if probe:
                row["figures"].append({"figure": f"linear probe on {experiment['probe']}: features / raw pixels",
                                       "reference": None,
                                       "ours": f"{probe['feature_accuracy']:.4f} / {probe['raw_accuracy']:.4f}"})
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def format_value(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: List[dict]) -> str:
    lines = ["| experiment | figure | reference | ours | how our data differs | reference source |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for figure in row.get("figures", []) or [{"figure": "(failed)", "reference": None, "ours": row.get("error")}]:
            lines.append(f"| `{row['preset']}` | {figure['figure']} | {format_value(figure['reference'])} | "
                         f"{format_value(figure['ours'])} | {row.get('note', '')} | {row.get('source') or '—'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(EXPERIMENTS), help="experiments to run (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override every preset's epochs (quick passes)")
    parser.add_argument("--workdir", default=None, help="DATA/ and RUN/ folders (default: a temporary folder); "
                        "rerunning with the same folder reuses DATA/ and resumes or reuses runs")
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probes (minutes each)")
    parser.add_argument("--markdown", default=None, help="also write the results table to this file")
    args = parser.parse_args()
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="ufl-reproduce-"))
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, "reproduce.log")
    rows = []
    for name in args.only or list(EXPERIMENTS):
        print(f"# {name}: running (log: {log})", file=sys.stderr, flush=True)
        try:
            row = run_experiment(name, workdir, args.epochs, log, probes=not args.no_probe)
        except (RuntimeError, OSError, KeyError) as error:
            row = {"preset": name, "error": str(error), "note": EXPERIMENTS[name]["note"]}
        rows.append(row)
        figures = "; ".join(f"{f['figure']}: ours {format_value(f['ours'])} vs reference "
                            f"{format_value(f['reference'])}" for f in row.get("figures", []))
        print(f"{name:<20} {figures or row.get('error')}  ({row.get('seconds', '?')} s)", file=sys.stderr, flush=True)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as handle:
                handle.write(markdown(rows) + "\n")
    print(json.dumps({"benchmark": "reproduce", "epochs_override": args.epochs, "workdir": workdir,
                      "load_average": [round(v, 2) for v in os.getloadavg()], "experiments": rows}, default=str))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
