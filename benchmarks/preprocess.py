"""Benchmark of ``ufl preprocess`` against a plain script doing the same job, timed in the same run.

The job: 200,000 random 16x16 patches from the 10 built-in photos (20,000 per photo), per-patch
contrast normalization then ZCA whitening (statistics over all patches), written as 4 GZIP TFRecord shards of
tf.train.Example. The plain script is what one would write by hand: numpy + scikit-learn's
``extract_patches_2d`` + ``np.linalg.eigh`` + ``tf.io.TFRecordWriter`` (one process), timed twice: as is
(numpy's default multi-threaded BLAS) and with BLAS limited to one thread (``threadpoolctl``; on a busy
machine multi-threaded OpenBLAS spin-waits, which ufl avoids the same way). ufl runs its Beam pipeline on the
DirectRunner with 2 worker processes (its default) and, as a second figure, in one process
(``--direct_running_mode=in_memory``). Prints one JSON line; ``ratio`` = ufl seconds / plain seconds,
``ratio_vs_plain_1thread`` = ufl seconds / single-thread-BLAS plain seconds.

  python benchmarks/preprocess.py [--patches-per-image 20000] [--patch-size 16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def plain_script(out_dir: str, *, patches_per_image: int, patch_size: int, num_shards: int = 4,
                 zca_epsilon: float = 0.01, seed: int = 0) -> int:
    """The same job without ufl; returns the number of patches written."""
    import skimage.data
    import tensorflow as tf
    from skimage.color import rgb2gray
    from sklearn.feature_extraction.image import extract_patches_2d

    from ufl.pipeline.sources import NATURAL_PHOTOS

    patches = []
    for index, name in enumerate(NATURAL_PHOTOS):
        image = skimage.data.__getattribute__(name)().astype(np.float32) / 255.0
        image = rgb2gray(image) if image.ndim == 3 else image
        patches.append(extract_patches_2d(image, (patch_size, patch_size), max_patches=patches_per_image,
                                          random_state=seed + index).reshape(patches_per_image, -1))
    data = np.concatenate(patches).astype(np.float64)
    data -= data.mean(axis=1, keepdims=True)
    data /= np.sqrt((data ** 2).mean(axis=1, keepdims=True) + 1e-3)
    mean = data.mean(axis=0)
    covariance = np.cov(data, rowvar=False, bias=True)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = (eigenvectors / np.sqrt(np.clip(eigenvalues, 0, None) + zca_epsilon)) @ eigenvectors.T
    data = ((data - mean) @ whitening).astype(np.float32)
    for shard in range(num_shards):
        path = os.path.join(out_dir, f"train-{shard:05d}-of-{num_shards:05d}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in range(shard, len(data), num_shards):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "patch": tf.train.Feature(float_list=tf.train.FloatList(value=data[row])),
                    "source": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[NATURAL_PHOTOS[row // patches_per_image].encode()])),
                    "position": tf.train.Feature(int64_list=tf.train.Int64List(value=[0, 0])),
                }))
                writer.write(example.SerializeToString())
    return len(data)


def ufl_preprocess(out_dir: str, beam_args, *, patches_per_image: int, patch_size: int) -> int:
    from ufl.config import PreprocessConfig
    from ufl.pipeline import preprocess

    config = PreprocessConfig(source="builtin:natural", out=out_dir, patch_size=patch_size,
                              patches_per_image=patches_per_image, eval_fraction=0.0,
                              normalize="contrast,zca", zca_epsilon=0.01, num_shards=4)
    metadata = preprocess(config, beam_args)
    return metadata["counts"]["patches"]["train"]


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".gz"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches-per-image", type=int, default=20_000)
    parser.add_argument("--patch-size", type=int, default=16)
    args = parser.parse_args()
    import tensorflow as tf  # noqa: F401  (imported before timing: the plain script's import is not its work)

    sizes = dict(patches_per_image=args.patches_per_image, patch_size=args.patch_size)
    with tempfile.TemporaryDirectory() as root:
        plain_dir = os.path.join(root, "plain")
        os.makedirs(plain_dir)
        plain_count, plain_seconds = timed(plain_script, plain_dir, **sizes)
        from threadpoolctl import threadpool_limits

        tuned_dir = os.path.join(root, "plain-1thread")
        os.makedirs(tuned_dir)
        with threadpool_limits(limits=1, user_api="blas"):
            _, tuned_seconds = timed(plain_script, tuned_dir, **sizes)
        ufl_count, ufl_seconds = timed(ufl_preprocess, os.path.join(root, "ufl"), [], **sizes)
        _, in_memory_seconds = timed(ufl_preprocess, os.path.join(root, "ufl-in-memory"),
                                     ["--direct_running_mode=in_memory", "--direct_num_workers=1"], **sizes)
        record = {
            "benchmark": "preprocess",
            "patches": ufl_count,
            "patch_size": args.patch_size,
            "normalize": "contrast,zca",
            "plain_seconds": round(plain_seconds, 2),
            "plain_1thread_seconds": round(tuned_seconds, 2),
            "ufl_seconds": round(ufl_seconds, 2),
            "ufl_in_memory_seconds": round(in_memory_seconds, 2),
            "ratio": round(ufl_seconds / plain_seconds, 3),
            "ratio_in_memory": round(in_memory_seconds / plain_seconds, 3),
            "ratio_vs_plain_1thread": round(ufl_seconds / tuned_seconds, 3),
            "ufl_patches_per_second": round(ufl_count / ufl_seconds),
            "plain_patches_per_second": round(plain_count / plain_seconds),
            "plain_bytes": folder_bytes(plain_dir),
            "ufl_bytes": folder_bytes(os.path.join(root, "ufl")),
            "load_average": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
