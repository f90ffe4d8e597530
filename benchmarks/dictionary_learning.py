"""Dictionary learning: ``ufl train sparse-coding`` against SPAMS trainDL and scikit-learn, in the same run.

Data: 60,000 training and 5,000 held-out 12x12 contrast-normalized patches of the scikit-image photos (as
in ``sparse_coding_inference.py``), 256 atoms, gamma = 0.1. The training patches are written once as a
DATA/ directory (not timed: that is ``ufl preprocess``'s job). Every learner starts from its own default
initialization and is scored the same way: the held-out objective mean ½‖s − xA‖² + γ‖x‖₁ with codes from
SPAMS ``lasso`` (exact) under the learned dictionary.

- SPAMS ``trainDL``: 3 epochs of mini-batches of 256 (the reference);
- scikit-learn ``MiniBatchDictionaryLearning``: 3 epochs, batch 256 (``--skip-sklearn`` skips it);
- ``ufl train sparse-coding`` for each ``--ufl-epochs`` and both ``dictionary_update`` modes, run as the
  user runs it (a fresh ``ufl train`` process), so its wall time counts everything: Python and TensorFlow
  start-up, reading DATA/, compiling, checkpoints, plots and metrics.

Prints one JSON line with each learner's held-out objective, wall seconds and CPU seconds (of the process
for SPAMS and scikit-learn, of the child process for ufl), ufl's ratios against SPAMS, and
``ufl_fastest_at_spams_objective``: the quickest ufl run whose objective is at or below SPAMS' 3-epoch one,
with its time ratio (the issue's goal is <= 0.25).

    .venv/bin/python benchmarks/dictionary_learning.py [--ufl-epochs 1 3] [--skip-sklearn]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparse_coding_inference import GAMMA, N_ATOMS, natural_patches, objective, spams_lasso  # noqa: E402

BATCH = 256


def held_out_objective(dictionary: np.ndarray, held_out: np.ndarray) -> float:
    dictionary = dictionary.astype(np.float32)
    return objective(held_out, spams_lasso(held_out, dictionary), dictionary)


def spams_train(patches: np.ndarray, epochs: int) -> np.ndarray:
    import spams

    atoms = spams.trainDL(np.asfortranarray(patches.T.astype(np.float64)), K=N_ATOMS, lambda1=GAMMA, mode=2,
                          iter=epochs * len(patches) // BATCH, batchsize=BATCH, numThreads=-1, verbose=False)
    return np.asarray(atoms).T


def sklearn_train(patches: np.ndarray, epochs: int) -> np.ndarray:
    from sklearn.decomposition import MiniBatchDictionaryLearning

    learner = MiniBatchDictionaryLearning(n_components=N_ATOMS, alpha=GAMMA, batch_size=BATCH, max_iter=epochs,
                                          tol=0, max_no_improvement=None, random_state=0,
                                          transform_algorithm="lasso_cd")
    return learner.fit(patches).components_


def ufl_train(data_dir: str, run_dir: str, epochs: int, dictionary_update: str, settings=()) -> np.ndarray:
    command = [sys.executable, "-m", "ufl.cli", "train", "sparse-coding", "--data", data_dir, "--out", run_dir,
               "--epochs", str(epochs), "--batch-size", str(BATCH), "--restart",
               "--set", f"model.dictionary_update={dictionary_update}", "--set", f"model.sparsity_weight={GAMMA}"]
    if dictionary_update == "gradient":
        command += ["--set", "model.truncate_gradient=0"]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
    names = [name for name in reader.get_variable_to_shape_map() if "dictionary" in name
             and "OPTIMIZER" not in name and name.startswith("model/")]
    if len(names) != 1:
        raise RuntimeError(f"expected one dictionary in {run_dir}'s checkpoint, found {names}")
    return reader.get_tensor(names[0])


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished child processes so far."""
    return sum(usage.ru_utime + usage.ru_stime for usage in
               (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(function, *args):
    """``(result, wall seconds, CPU seconds)`` of ``function(*args)``."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = function(*args)
    return result, time.perf_counter() - start, cpu_seconds() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-patches", type=int, default=60_000)
    parser.add_argument("--held-out-patches", type=int, default=5_000)
    parser.add_argument("--ufl-epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--modes", nargs="+", default=["online", "gradient"])
    parser.add_argument("--ufl-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra 'ufl train --set' overrides, e.g. model.max_inference_steps=100")
    parser.add_argument("--skip-sklearn", action="store_true", help="skip scikit-learn (several minutes)")
    args = parser.parse_args()

    from ufl.pipeline.tfrecord import write_data_dir

    patches = natural_patches(args.train_patches + args.held_out_patches, seed=7)
    train, held_out = patches[:args.train_patches], patches[args.train_patches:]
    result = {"benchmark": "dictionary_learning", "train_patches": len(train), "held_out_patches": len(held_out),
              "n_atoms": N_ATOMS, "gamma": GAMMA, "batch_size": BATCH, "ufl_settings": args.ufl_set}
    dictionary, seconds, cpu = timed(spams_train, train, 3)
    result.update(spams_3_epochs_objective=held_out_objective(dictionary, held_out), spams_3_epochs_seconds=seconds,
                  spams_3_epochs_cpu_seconds=cpu)
    if not args.skip_sklearn:
        dictionary, seconds, cpu = timed(sklearn_train, train, 3)
        result.update(sklearn_3_epochs_objective=held_out_objective(dictionary, held_out),
                      sklearn_3_epochs_seconds=seconds, sklearn_3_epochs_cpu_seconds=cpu)
    reached = []
    with tempfile.TemporaryDirectory() as workdir:
        data_dir = os.path.join(workdir, "data")
        write_data_dir(data_dir, {"train": train, "eval": held_out}, patch_size=(12, 12), channels=1,
                       normalization={"steps": ["contrast"]}, num_shards=4)
        for mode in args.modes:
            for epochs in args.ufl_epochs:
                name = f"ufl_{mode}_{epochs}_epochs"
                dictionary, seconds, cpu = timed(ufl_train, data_dir, os.path.join(workdir, name), epochs, mode,
                                                 args.ufl_set)
                value = held_out_objective(dictionary, held_out)
                if value <= result["spams_3_epochs_objective"]:
                    reached.append((seconds, name))
                result.update({f"{name}_objective": value, f"{name}_seconds": seconds, f"{name}_cpu_seconds": cpu,
                               f"{name}_time_vs_spams": seconds / result["spams_3_epochs_seconds"],
                               f"{name}_gap_percent_vs_spams":
                                   100 * (value / result["spams_3_epochs_objective"] - 1)})
    if reached:
        seconds, name = min(reached)
        result.update(ufl_fastest_at_spams_objective=name,
                      ufl_fastest_at_spams_objective_time_vs_spams=seconds / result["spams_3_epochs_seconds"])
    print(json.dumps({key: round(value, 5) if isinstance(value, float) else value
                      for key, value in result.items()}))


if __name__ == "__main__":
    main()
