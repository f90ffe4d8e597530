"""Whole-image encoding: the features of the 60,000 MNIST training images, as ``ufl evaluate`` computes them.

The linear probe's recipe (README, section Evaluate): 6x6 patches normalized by ``contrast,zca``, a 128-atom
``sparse-coding`` dictionary (2 epochs, γ 1, FISTA <= 30 steps, tolerance 1e-3), then the ``encode_images``
graph on every image: grid patches at stride 2 (144 per image, 8.64 M in all) -> normalization -> codes ->
sign split -> 2x2 sum pooling. The run is built once with the ufl CLI in ``--workdir`` (reused when present).

Figures, in the same process: ufl's ``encode_images`` on all images (the path of ``ufl evaluate --run``,
per-patch inference: screening + each patch stopping on its own), wall and CPU seconds (on a shared CPU the
CPU seconds measure the work); the same graph with the batch loop (every patch stepping until the slowest
one of its batch stops), alternating batch by batch with ufl's so that both see the same load; and
scikit-learn's ``SparseCoder``
(``lasso_cd``, the same normalized patches and dictionary) on ``--sklearn-images`` images; patches/s each,
and the mean lasso objective of each method's codes on the subset.

MNIST is found as ``ufl`` finds it (``$UFL_DATASETS``, Keras' cache, Debian's folder; downloaded when online).

    [UFL_DATASETS=DIR] .venv/bin/python benchmarks/encode_images.py [--images 60000] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PATCH, STRIDE, ATOMS, POOL = 6, 2, 128, 2


def mnist_images(limit: int) -> np.ndarray:
    """The first ``limit`` MNIST training images, float32 in [0, 1], ``(n, 28, 28, 1)``: the images of
    ``--source builtin:mnist``'s train split, which the benchmark's dictionary is trained on."""
    from ufl.errors import UflError
    from ufl.pipeline import load_images

    try:
        return load_images("builtin:mnist", split="train")[0][:limit]
    except UflError as error:
        raise SystemExit(str(error)) from None


def trained_run(workdir: str) -> str:
    """RUN/ of the probe's sparse-coding encoder, trained with the ufl CLI (once per workdir)."""
    from ufl.cli import main as ufl

    run_dir = os.path.join(workdir, "run")
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        return run_dir
    data_dir = os.path.join(workdir, "data")
    for argv in (["preprocess", "--source", "builtin:mnist", "--patch-size", str(PATCH),
                  "--normalize", "contrast,zca", "--patches-per-image", "10", "--min-std", "0.02", "--out", data_dir],
                 ["train", "sparse-coding", "--data", data_dir, "--out", run_dir, "--set",
                  f"model.n_atoms={ATOMS}", "--epochs", "2"]):
        if ufl(argv) != 0:
            raise SystemExit(f"ufl {' '.join(argv)} failed")
    return run_dir


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def cpu_timed(function, *args):
    """``(result, wall seconds, CPU seconds of this process)``: on a CPU shared with other jobs the CPU
    seconds (all threads) still measure the work, where wall time measures the load."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=256, help="images per encode_images call")
    parser.add_argument("--sklearn-images", type=int, default=300)
    parser.add_argument("--batch-loop-images", type=int, default=10_000)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ufl-bench-encode-images"))
    args = parser.parse_args()

    import tensorflow as tf

    from ufl.export.evaluate import run_encoder
    from ufl.pipeline.image_features import extract_grid_patches, pooled_image_features
    from ufl.trainers.sparse_inference import lasso_objective

    images = mnist_images(args.images)
    run_dir = trained_run(args.workdir)
    encode, info = run_encoder(run_dir, grid_stride=STRIDE, pool_grid=POOL, batch_size=args.batch_size)
    per_image = ((28 - PATCH) // STRIDE + 1) ** 2
    result = {"benchmark": "encode_images", "images": len(images), "patches": len(images) * per_image,
              "feature_dim": info["feature_size"], "batch_size": args.batch_size, "loadavg_start": os.getloadavg()[0]}
    _, result["ufl_compile_seconds"] = timed(encode, images[:args.batch_size])
    _, seconds, cpu_seconds = cpu_timed(encode, images)
    result.update(ufl_seconds=seconds, ufl_cpu_seconds=cpu_seconds,
                  ufl_patches_per_second=result["patches"] / seconds)

    # the same graph with the batch loop, and the codes of each method on a subset, under one dictionary
    from ufl.export.serving_module import ServingModule
    from ufl.trainers.run_dir import load_trained_model

    trained = load_trained_model(run_dir)
    module = ServingModule(trained.model, trained.metadata, trained.stats, grid_stride=STRIDE, pool_grid=POOL)
    coder, dictionary = trained.model.coder, trained.model.dictionary

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    def batch_loop_features(batch):
        return pooled_image_features(batch, lambda patches: coder.encode(module.normalize(patches)),
                                     patch_size=PATCH, stride=STRIDE, pool_grid=POOL)

    # ufl and the batch loop alternate batch by batch, so both see the same load
    subset = images[:args.batch_loop_images]
    batch_loop_features(tf.constant(subset[:args.batch_size]))
    totals = np.zeros((2, 2))
    for start in range(0, len(subset), args.batch_size):
        batch = subset[start:start + args.batch_size]
        totals[0] += cpu_timed(encode, batch)[1:]
        totals[1] += cpu_timed(lambda: batch_loop_features(tf.constant(batch)).numpy())[1:]
    result.update(batch_loop_images=len(subset),
                  interleaved_ufl_patches_per_second=len(subset) * per_image / totals[0, 0],
                  batch_loop_patches_per_second=len(subset) * per_image / totals[1, 0],
                  ufl_speedup_vs_batch_loop=totals[1, 0] / totals[0, 0],
                  ufl_cpu_speedup_vs_batch_loop=totals[1, 1] / totals[0, 1])

    sample = images[:args.sklearn_images]
    patches = module.normalize(tf.reshape(extract_grid_patches(tf.constant(sample), patch_size=PATCH,
                                                                stride=STRIDE), [-1, PATCH * PATCH]))
    from sklearn.decomposition import SparseCoder

    sklearn_coder = SparseCoder(dictionary.numpy().astype(np.float64), transform_algorithm="lasso_cd",
                                transform_alpha=coder.sparsity_weight, n_jobs=-1)
    sklearn_codes, seconds = timed(sklearn_coder.transform, patches.numpy().astype(np.float64))
    result.update(sklearn_images=len(sample), sklearn_patches_per_second=len(patches) / seconds)

    def mean_objective(codes):
        return float(tf.reduce_mean(lasso_objective(patches, tf.cast(codes, tf.float32), dictionary,
                                                    sparsity_weight=coder.sparsity_weight)))

    reference = mean_objective(sklearn_codes)
    for name, codes in (("ufl", trained.model.encode(patches)), ("batch_loop", coder.encode(patches))):
        result[f"{name}_objective_gap_percent_vs_sklearn"] = 100 * (mean_objective(codes) / reference - 1)
    result["sklearn_objective"] = reference
    result["ufl_speedup_vs_sklearn"] = result["ufl_patches_per_second"] / result["sklearn_patches_per_second"]
    result["loadavg_end"] = os.getloadavg()[0]
    result["goal_met"] = bool(result["ufl_seconds"] * 60_000 / len(images) <= 20.0)
    result["goal_met_by_cpu_seconds_over_2_cores"] = bool(result["ufl_cpu_seconds"] / 2 * 60_000 / len(images)
                                                          <= 20.0)
    print(json.dumps({key: round(value, 5) if isinstance(value, float) else value
                      for key, value in result.items()}))


if __name__ == "__main__":
    main()
