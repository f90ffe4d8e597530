"""What the shared training loop costs: `ufl train`'s loop against tf_keras `fit` on the same model.

Both train the same ufl model object kind (``deep-sparse-ae``: 784-256-128-64-32-16 + mirrored decoder,
ReLU, MSE + L1 on activations, Adam 1e-3, batch 32) with the same ``train_step`` on the same
Fashion-MNIST training images (``builtin:fashion-mnist``; random ones when it cannot be found):
  - keras: ``model.fit(arrays, batch_size=32, steps_per_execution=50, jit_compile=True)`` from memory;
  - ufl:   ``ufl.trainers.train_loop.train`` from DATA/ TFRecords (written beforehand, not timed), with
           checkpoints, TensorBoard scalars and metrics, ``steps_per_execution=50`` (its fused path: each
           execution one XLA while loop over batches gathered from the split held in memory).
Throughput is measured after the first epoch (compilation) for both. Prints one JSON line.

    .venv/bin/python benchmarks/train_loop_overhead.py [--examples 30000] [--epochs 3] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np



def load_images(count: int):
    """``(images (count, 784) float32 in [0, 1], name of the data)``."""
    from ufl.errors import DataError
    from ufl.pipeline import datasets

    try:
        images = datasets.load("fashion-mnist").x_train[:count]
    except DataError:
        return np.random.default_rng(0).uniform(size=(count, 784)).astype(np.float32), "random"
    return (images.reshape(len(images), -1) / 255.0).astype(np.float32), "fashion_mnist"


def keras_fit(images: np.ndarray, preset, epochs: int, batch_size: int) -> dict:
    import tensorflow as tf
    import tf_keras

    from ufl.trainers.registry import build_model
    from ufl.trainers.train_loop import make_optimizer

    tf_keras.utils.set_random_seed(0)
    model = build_model(preset.model, (28, 28, 1))
    model(tf.zeros([1, 784]))
    model.compile(optimizer=make_optimizer(preset.train["optimizer"]), steps_per_execution=50, jit_compile=True)
    epoch_times = []

    class Timer(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    history = model.fit({"patch": images}, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                        callbacks=[Timer()])
    steps = len(images) // batch_size
    steady = sum(epoch_times[1:])
    return {"examples_per_second": steps * batch_size * (epochs - 1) / steady,
            "final_loss": float(history.history["loss"][-1])}


def ufl_train(images: np.ndarray, preset, epochs: int, batch_size: int, workdir: str) -> dict:
    from ufl.config.train import TrainConfig
    from ufl.pipeline.tfrecord import write_data_dir
    from ufl.trainers.train_loop import train

    data_dir = os.path.join(workdir, "data")
    write_data_dir(data_dir, {"train": images}, patch_size=(28, 28), channels=1, num_shards=2)
    config = TrainConfig(preset=preset.name, data=data_dir, out=os.path.join(workdir, "run"), model=preset.model,
                         epochs=epochs, batch_size=batch_size, optimizer=preset.train["optimizer"],
                         steps_per_execution=50, checkpoint_every=10_000, restart=True)
    start = time.perf_counter()
    metrics = train(config)
    return {"examples_per_second": metrics["examples_per_second"], "final_loss": metrics["train_objective"],
            "wall_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ufl/keras rounds (best of each)")
    args = parser.parse_args()
    from ufl.trainers.presets import get_preset

    preset = get_preset("deep-sparse-ae")
    images, data_name = load_images(args.examples)
    ufl_rounds, keras_rounds = [], []
    for _ in range(args.rounds):  # alternating rounds, best of each: the machine may be shared
        with tempfile.TemporaryDirectory() as workdir:
            ufl_rounds.append(ufl_train(images, preset, args.epochs, args.batch_size, workdir))
        keras_rounds.append(keras_fit(images, preset, args.epochs, args.batch_size))
    ufl = max(ufl_rounds, key=lambda r: r["examples_per_second"])
    keras = max(keras_rounds, key=lambda r: r["examples_per_second"])
    print(json.dumps({
        "benchmark": "train_loop_overhead", "model": "deep-sparse-ae", "examples": len(images),
        "epochs": args.epochs, "batch_size": args.batch_size, "rounds": args.rounds,
        "data": data_name,
        "ufl_examples_per_second": round(ufl["examples_per_second"], 1),
        "keras_fit_examples_per_second": round(keras["examples_per_second"], 1),
        "ufl_over_keras": round(ufl["examples_per_second"] / keras["examples_per_second"], 3),
        "ufl_rounds": [round(r["examples_per_second"]) for r in ufl_rounds],
        "keras_rounds": [round(r["examples_per_second"]) for r in keras_rounds],
        "ufl_final_loss": round(ufl["final_loss"], 5), "keras_final_loss": round(keras["final_loss"], 5),
        "ufl_wall_seconds": round(ufl["wall_seconds"], 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
