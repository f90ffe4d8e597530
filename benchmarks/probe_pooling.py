"""Linear-probe accuracy of a patch encoder's features at several pooling grids, from one encoding pass.

Codes every patch of every image on a grid once (the exported ``encode_images`` graph's patches and
normalization), then sum-pools the sign-split codes over 2×2, 3×3, ... regions and fits the probe of
``ufl evaluate linear-probe --split source`` (standardized logistic regression) on the source's train
images, scored on its test images. Compare RUNs with different numbers of atoms to see which of "more
atoms" and "finer pooling" the accuracy needs (Coates & Ng's single-layer recipe).

  benchmarks/probe_pooling.py --run RUN --data builtin:mnist --grid-stride 2 --pool-grids 2,3,4 --C 0.1,0.01

Prints one JSON line: accuracy, feature size and fit seconds per (pooling grid, C), and the encoding time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def pool(codes: np.ndarray, grid: int) -> np.ndarray:
    """Sum of ``(n, rows, cols, k)`` codes over ``grid``×``grid`` regions (the edges of ``pooled_image_features``)."""
    rows, cols = codes.shape[1:3]
    row_edges = [rows * i // grid for i in range(grid + 1)]
    col_edges = [cols * j // grid for j in range(grid + 1)]
    return np.concatenate([codes[:, row_edges[i]:row_edges[i + 1], col_edges[j]:col_edges[j + 1]].sum((1, 2))
                           for i in range(grid) for j in range(grid)], axis=-1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained patch-model RUN/ (e.g. ufl train sparse-coding)")
    parser.add_argument("--data", default="builtin:mnist", help="a source with its own train/test split")
    parser.add_argument("--grid-stride", type=int, default=2)
    parser.add_argument("--pool-grids", default="2,3,4")
    parser.add_argument("--C", default="0.1", help="inverse L2 strengths of the probe, comma-separated")
    parser.add_argument("--max-images", type=int, default=None, help="stratified subset of the train images")
    args = parser.parse_args()

    import tensorflow as tf

    from ufl.export.evaluate import fit_probe, source_split
    from ufl.export.serving_module import ServingModule
    from ufl.trainers.image_features import extract_grid_patches
    from ufl.trainers.run_dir import load_trained_model

    images, labels, (train, test) = source_split(args.data, max_images=args.max_images)
    trained = load_trained_model(args.run)
    module = ServingModule(trained.model, trained.metadata, trained.stats, grid_stride=args.grid_stride)
    side, stride = module.patch_size, args.grid_stride
    grids = [int(g) for g in args.pool_grids.split(",")]

    @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32)])
    def split_codes(batch):
        patches = extract_grid_patches(batch, patch_size=side, stride=stride)
        rows, cols = patches.shape[1], patches.shape[2]
        codes = module.encode_raw_patches(tf.reshape(patches, [-1, patches.shape[3]]))
        codes = tf.reshape(codes, [tf.shape(batch)[0], rows, cols, -1])
        return tf.concat([tf.nn.relu(codes), tf.nn.relu(-codes)], axis=-1)

    started = time.perf_counter()
    pooled = {grid: [] for grid in grids}
    for start in range(0, len(images), 500):
        codes = split_codes(images[start:start + 500]).numpy()
        for grid in grids:
            pooled[grid].append(pool(codes, grid).astype(np.float32))
    encode_seconds = time.perf_counter() - started
    results = []
    for grid in grids:
        features = np.concatenate(pooled[grid])
        for C in (float(c) for c in args.C.split(",")):
            accuracy, seconds = fit_probe(features, labels, train, test, C=C, max_iter=1000)
            results.append({"pool_grid": grid, "C": C, "accuracy": accuracy, "feature_dim": int(features.shape[1]),
                            "fit_seconds": round(seconds, 1)})
            print(f"pool {grid}x{grid}, C {C}: {accuracy:.4f} ({features.shape[1]} features)", file=sys.stderr)
    print(json.dumps({"benchmark": "probe_pooling", "run": args.run, "data": args.data, "grid_stride": stride,
                      "n_train": int(len(train)), "n_test": int(len(test)), "encode_seconds": round(encode_seconds, 1),
                      "load_average": [round(v, 2) for v in os.getloadavg()], "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
