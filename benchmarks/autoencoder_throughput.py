"""Training throughput of the deep sparse autoencoder: `ufl train deep-sparse-ae` vs PyTorch vs tf_keras fit.

The same network (784-256-128-64-32-16 + mirrored decoder, ReLU everywhere), loss (MSE + 0.001 ·
Σ_layers mean|activations|), optimizer (Adam 1e-3) and batch (32) on the same data: Fashion-MNIST's official
split (60,000 training + 10,000 validation images, found as ``builtin:fashion-mnist`` is: ``UFL_DATASETS``,
Keras' cache, Debian's folder, or a download), pixels in [0, 1]; ``--fashion PATH`` takes an npz of
``images``/``labels`` instead, split stratified, seed 0, 6,000 + 1,000 per class. Each peer runs in its own
subprocess, one after the other, so peak memory (VmHWM) is its own:

- ``ufl``: ``ufl train deep-sparse-ae`` (through ``ufl.cli.main``) on a DATA/ written from the split; its
  examples/s is the loop's steady rate (executions that compiled left out); ``ufl_wall_examples_per_second``
  divides the examples by the whole command's wall time (reading DATA/, compiling, per-epoch eval,
  checkpoints, plots).
- ``torch``: the same model in PyTorch CPU, ``torch.set_num_threads(2)``, tensors in memory, one
  ``randperm`` per epoch; ``torch_1thread`` the same with one thread (PyTorch's OpenMP threads collapse
  when the two cores are shared with other work, so this is the fairer peer on a loaded machine).
- ``keras_fit``: a plain tf_keras model and ``fit(steps_per_execution=50, jit_compile=True)`` (the L1 term as
  activity regularizers ``L1(0.001 / units)``, which equals 0.001 · mean|a| per layer), examples/s over
  the epochs after the first.

Validation loss = MSE on the 10,000 validation images after the last epoch (what the reference reports).
Prints one JSON line. ``--epochs`` shortens the run (default 25, the reference's) and
``--max-train-examples`` trains every peer on the same stratified subset (validation stays 10,000 images).
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UNITS = [256, 128, 64, 32, 16]
L1_WEIGHT, LEARNING_RATE, BATCH_SIZE, THREADS = 1e-3, 1e-3, 32, 2


def stratified_split(labels: np.ndarray, *, train_per_class: int = 6000, val_per_class: int = 1000,
                     seed: int = 0):
    """Indices ``(train, val)``: per class, a seeded permutation's first ``train_per_class`` / next ones."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train.append(members[:train_per_class])
        val.append(members[train_per_class:train_per_class + val_per_class])
    return rng.permutation(np.concatenate(train)), np.concatenate(val)


def load_split(path, max_train_examples=None):
    """``(x_train, y_train, x_val, y_val)``: flat float32 images in [0, 1] and int64 labels."""
    per_class = 6000 if not max_train_examples else min(6000, max_train_examples // 10)
    if path:
        with np.load(path) as archive:
            images = archive["images"].reshape(len(archive["images"]), -1).astype(np.float32) / 255.0
            labels = archive["labels"].astype(np.int64)
        train, val = stratified_split(labels, train_per_class=per_class)
        return images[train], labels[train], images[val], labels[val]
    from ufl.pipeline import datasets

    found = datasets.load("fashion-mnist")
    train = stratified_split(found.y_train, train_per_class=per_class, val_per_class=0)[0]

    def flat(images):
        return images.reshape(len(images), -1).astype(np.float32) / 255.0

    return (flat(found.x_train[train]), found.y_train[train].astype(np.int64), flat(found.x_test),
            found.y_test.astype(np.int64))


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would carry the parent's peak over exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_ufl(args) -> dict:
    from ufl import cli

    run_dir = os.path.join(args.workdir, "run")
    start = time.perf_counter()
    code = cli.main(["train", "deep-sparse-ae", "--data", os.path.join(args.workdir, "data"), "--out", run_dir,
                     "--epochs", str(args.epochs), "--restart"])
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"ufl train failed with exit code {code}")
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    return {"examples_per_second": metrics["examples_per_second"],
            "wall_examples_per_second": metrics["steps"] * BATCH_SIZE / wall, "wall_seconds": wall,
            "val_loss": metrics["eval"]["reconstruction_error"], "val_objective": metrics["eval"]["loss"]}


def run_torch(args) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_train, _, x_val, _ = (torch.from_numpy(a) for a in load_split(args.fashion, args.max_train_examples))
    widths = [784] + UNITS + UNITS[-2::-1] + [784]
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(x):
        activations = []
        for layer in layers:
            x = torch.relu(layer(x))
            activations.append(x)
        return x, activations

    def objective(x):
        output, activations = forward(x)
        mse = torch.mean((output - x) ** 2)
        return mse + L1_WEIGHT * sum(torch.mean(torch.abs(a)) for a in activations), mse

    optimizer = torch.optim.Adam(layers.parameters(), lr=LEARNING_RATE)
    steps = len(x_train) // BATCH_SIZE
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train))
        for step in range(steps):
            batch = x_train[order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]]
            optimizer.zero_grad(set_to_none=True)
            loss, _ = objective(batch)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        val_objective, val_loss = objective(x_val)
    return {"examples_per_second": args.epochs * steps * BATCH_SIZE / seconds, "wall_seconds": seconds,
            "val_loss": float(val_loss), "val_objective": float(val_objective)}


def run_keras_fit(args) -> dict:
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    x_train, _, x_val, _ = load_split(args.fashion, args.max_train_examples)
    widths = UNITS + UNITS[-2::-1] + [784]
    model = tf_keras.Sequential(
        [tf_keras.Input((784,))] + [tf_keras.layers.Dense(units, activation="relu",
                                                          activity_regularizer=tf_keras.regularizers.L1(
                                                              L1_WEIGHT / units)) for units in widths])
    model.compile(optimizer=tf_keras.optimizers.Adam(LEARNING_RATE), loss="mse", steps_per_execution=50,
                  jit_compile=True)

    class EpochTimes(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    steps = len(x_train) // BATCH_SIZE
    dataset = tf.data.Dataset.from_tensor_slices((x_train, x_train)).shuffle(len(x_train), seed=0) \
        .batch(BATCH_SIZE, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    model.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[EpochTimes()])
    steady = times[1:] or times
    reconstruction = model.predict(x_val, batch_size=1000, verbose=0)
    return {"examples_per_second": len(steady) * steps * BATCH_SIZE / sum(steady), "wall_seconds": sum(times),
            "val_loss": float(np.mean((reconstruction - x_val) ** 2))}


def run_torch_1thread(args) -> dict:
    args.threads = 1
    return run_torch(args)


PEERS = {"ufl": run_ufl, "torch": run_torch, "torch_1thread": run_torch_1thread, "keras_fit": run_keras_fit}


def write_data(fashion: str, data_dir: str, max_train_examples=None) -> None:
    from ufl.pipeline.tfrecord import write_data_dir

    x_train, y_train, x_val, y_val = load_split(fashion, max_train_examples)
    write_data_dir(data_dir, {"train": x_train, "eval": x_val}, patch_size=(28, 28), channels=1,
                   labels={"train": y_train, "eval": y_val},
                   source=f"npz:{fashion} (stratified, seed 0)" if fashion else "builtin:fashion-mnist",
                   num_shards=4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--fashion", default=None,
                        help="an npz of images and labels to split stratified (default: builtin:fashion-mnist's "
                        "official split)")
    parser.add_argument("--workdir", default=None, help="where DATA/ and RUN/ go (default: a temporary folder)")
    parser.add_argument("--max-train-examples", type=int, default=None,
                        help="train on a stratified subset of this many images (default: all 60,000)")
    parser.add_argument("--peers", nargs="*", choices=sorted(PEERS),
                        default=["ufl", "torch", "torch_1thread", "keras_fit"])
    parser.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=THREADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # child process: one peer, one JSON line
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = PEERS[args.peer](args)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)
        return 0

    args.workdir = args.workdir or tempfile.mkdtemp(prefix="ufl-ae-bench-")
    if "ufl" in args.peers:
        write_data(args.fashion, os.path.join(args.workdir, "data"), args.max_train_examples)
    train_examples = 60000 if not args.max_train_examples else 10 * min(6000, args.max_train_examples // 10)
    record = {"benchmark": "autoencoder_throughput", "preset": "deep-sparse-ae", "epochs": args.epochs,
              "batch_size": BATCH_SIZE, "train_examples": train_examples, "val_examples": 10000,
              "load_average_before": [round(v, 2) for v in os.getloadavg()]}
    for peer in args.peers:
        print(f"# {peer}: training {args.epochs} epochs", file=sys.stderr, flush=True)
        command = [sys.executable, os.path.abspath(__file__), "--peer", peer, "--epochs", str(args.epochs),
                   "--workdir", args.workdir] + (["--fashion", args.fashion] if args.fashion else [])
        command += ["--max-train-examples", str(args.max_train_examples)] if args.max_train_examples else []
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            print(f"# {peer}: failed (exit {result.returncode})", file=sys.stderr)
            return 1
        for key, value in json.loads(lines[-1]).items():
            record[f"{peer}_{key}"] = round(value, 5) if isinstance(value, float) else value
    for peer in ("torch", "torch_1thread", "keras_fit"):
        if "ufl" in args.peers and peer in args.peers:
            record[f"ufl_vs_{peer}_throughput"] = round(
                record["ufl_examples_per_second"] / record[f"{peer}_examples_per_second"], 3)
            record[f"ufl_vs_{peer}_val_loss"] = round(record["ufl_val_loss"] / record[f"{peer}_val_loss"], 3)
    record["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(record, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
