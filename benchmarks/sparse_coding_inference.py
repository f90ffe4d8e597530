"""Sparse-coding inference: ufl FISTA / RMSprop against SPAMS lasso and scikit-learn, in the same run.

Data: 20,000 random 12x12 patches of the grayscale photos that ship with scikit-image, contrast-normalized
with ufl's own normalization math. Dictionary: 256 unit-norm atoms learned by SPAMS ``trainDL`` (100
mini-batches of 256) on 20,000 other patches of the same photos, then held fixed — the kind of dictionary
inference runs with in a trained model. gamma = 0.1, objective = mean over patches of
½‖s − xA‖² + γ‖x‖₁ (SPAMS ``lasso`` mode 2 solves exactly this, by LARS).

Each γ of ``--gammas`` (default 0.1 and 1.0) is one problem under the same dictionary. ufl methods:
``ufl_fista`` (the batch loop, XLA, ``--fista-steps`` steps), ``ufl_per_patch`` (what served models run:
screening, each patch stopping on its own after at most ``--per-patch-steps`` steps at
``--per-patch-tolerance``; TF graph, no XLA) and
``ufl_rmsprop`` (the original layer's inference).

Prints one JSON line: objective and seconds per method and γ (keys suffixed ``_g0.1``, ``_g1.0``), each
method's objective gap to SPAMS and its time relative to SPAMS, and the load average. ufl times exclude the
one-off compilation (reported as ``*_compile_seconds``).

    .venv/bin/python benchmarks/sparse_coding_inference.py [--patches 20000] [--gammas 0.1 1.0] [--skip-sklearn]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "grass", "gravel", "brick",
          "clock", "cat")
GAMMA = 0.1  # of the dictionary learning
N_ATOMS = 256


def natural_patches(n: int, *, size: int = 12, seed: int = 0) -> np.ndarray:
    """``(n, size*size)`` float32 contrast-normalized random patches of the scikit-image photos."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    from ufl.pipeline.normalize import contrast_normalize

    rng = np.random.default_rng(seed)
    per_photo = -(-n // len(PHOTOS))
    patches = []
    for name in PHOTOS:
        image = img_as_float(getattr(skimage.data, name)())
        image = rgb2gray(image[..., :3]) if image.ndim == 3 else image
        rows = rng.integers(0, image.shape[0] - size + 1, per_photo)
        columns = rng.integers(0, image.shape[1] - size + 1, per_photo)
        offsets = np.arange(size)
        patches.append(image[rows[:, None, None] + offsets[None, :, None],
                             columns[:, None, None] + offsets[None, None, :]].reshape(per_photo, -1))
    patches = np.concatenate(patches)[rng.permutation(per_photo * len(PHOTOS))[:n]]
    return contrast_normalize(patches).astype(np.float32)


def learned_dictionary(n_atoms: int = N_ATOMS, *, seed: int = 1) -> np.ndarray:
    """``(n_atoms, 144)`` unit-norm dictionary from SPAMS trainDL on patches disjoint from the test ones."""
    import spams

    training = natural_patches(20_000, seed=seed + 100).astype(np.float64)
    training = training[np.linalg.norm(training, axis=1) > 1.0]
    rng = np.random.default_rng(seed)
    initial = training[rng.choice(len(training), n_atoms, replace=False)]
    initial /= np.linalg.norm(initial, axis=1, keepdims=True)
    atoms = spams.trainDL(np.asfortranarray(training.T), D=np.asfortranarray(initial.T), lambda1=GAMMA,
                          mode=2, iter=100, batchsize=256, numThreads=-1, verbose=False)
    atoms = np.asarray(atoms).T
    return (atoms / np.linalg.norm(atoms, axis=1, keepdims=True)).astype(np.float32)


def objective(patches: np.ndarray, codes: np.ndarray, dictionary: np.ndarray, gamma: float) -> float:
    patches, codes, dictionary = (np.asarray(a, np.float64) for a in (patches, codes, dictionary))
    residual = patches - codes @ dictionary
    return float(np.mean(0.5 * np.sum(residual ** 2, 1) + gamma * np.abs(codes).sum(1)))


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def spams_lasso(patches, dictionary, gamma):
    import spams

    codes = spams.lasso(np.asfortranarray(patches.T.astype(np.float64)),
                        D=np.asfortranarray(dictionary.T.astype(np.float64)), lambda1=gamma, mode=2,
                        numThreads=-1)
    return codes.toarray().T


def sklearn_lasso(patches, dictionary, gamma):
    from sklearn.decomposition import sparse_encode

    return sparse_encode(patches.astype(np.float64), dictionary.astype(np.float64), algorithm="lasso_cd",
                         alpha=gamma, n_jobs=-1)


def ufl_encoder(dictionary, *, method, chunk, gamma, xla=True, **options):
    """A function ``patches -> codes`` running ufl's compiled inference over fixed-size chunks."""
    import tensorflow as tf

    from ufl.trainers.sparse_inference import lipschitz_constant, sparse_encode

    atoms = tf.constant(dictionary)
    lipschitz = lipschitz_constant(atoms)

    @tf.function(jit_compile=xla, input_signature=[tf.TensorSpec([None, dictionary.shape[1]], tf.float32)])
    def encode_chunk(patches):
        return sparse_encode(patches, atoms, sparsity_weight=gamma, method=method, lipschitz=lipschitz,
                             **options)

    def encode(patches):
        padded = -(-len(patches) // chunk) * chunk
        data = tf.constant(np.pad(patches, [(0, padded - len(patches)), (0, 0)]))
        codes = [encode_chunk(data[start:start + chunk]) for start in range(0, padded, chunk)]
        return tf.concat(codes, 0).numpy()[:len(patches)]

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=20_000)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--fista-steps", type=int, default=150)
    parser.add_argument("--fista-tolerance", type=float, default=1e-3)
    parser.add_argument("--per-patch-steps", type=int, default=300)
    parser.add_argument("--per-patch-tolerance", type=float, default=3e-4)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--skip-sklearn", action="store_true", help="skip scikit-learn (about a minute)")
    args = parser.parse_args()

    patches = natural_patches(args.patches)
    dictionary = learned_dictionary()
    result = {"benchmark": "sparse_coding_inference", "patches": len(patches), "patch_dim": patches.shape[1],
              "n_atoms": N_ATOMS, "loadavg_start": os.getloadavg()[0]}
    for gamma in args.gammas:
        suffix = f"_g{gamma:g}"
        codes, seconds = timed(spams_lasso, patches, dictionary, gamma)
        reference = objective(patches, codes, dictionary, gamma)
        result.update({f"spams_objective{suffix}": reference, f"spams_seconds{suffix}": seconds,
                       f"spams_nonzeros{suffix}": float(np.mean(np.sum(codes != 0, 1)))})
        methods = {
            "ufl_fista": ufl_encoder(dictionary, method="fista", chunk=args.chunk, gamma=gamma,
                                     max_steps=args.fista_steps, tolerance=args.fista_tolerance),
            "ufl_per_patch": ufl_encoder(dictionary, method="fista", chunk=args.chunk, gamma=gamma, xla=False,
                                         max_steps=args.per_patch_steps, tolerance=args.per_patch_tolerance,
                                         per_patch=True),
            "ufl_rmsprop": ufl_encoder(dictionary, method="rmsprop", chunk=args.chunk, gamma=gamma, n_steps=100),
        }
        for name, encode in methods.items():
            _, compile_seconds = timed(encode, patches[:args.chunk])
            codes, seconds = timed(encode, patches)
            value = objective(patches, codes, dictionary, gamma)
            result.update({f"{name}_objective{suffix}": value, f"{name}_seconds{suffix}": seconds,
                           f"{name}_compile_seconds{suffix}": compile_seconds,
                           f"{name}_gap_percent{suffix}": 100 * (value / reference - 1),
                           f"{name}_time_vs_spams{suffix}": seconds / result[f"spams_seconds{suffix}"],
                           f"{name}_nonzeros{suffix}": float(np.mean(np.sum(np.abs(codes) > 1e-6, 1)))})
        if not args.skip_sklearn:
            codes, seconds = timed(sklearn_lasso, patches, dictionary, gamma)
            value = objective(patches, codes, dictionary, gamma)
            result.update({f"sklearn_objective{suffix}": value, f"sklearn_seconds{suffix}": seconds,
                           f"sklearn_gap_percent{suffix}": 100 * (value / reference - 1)})
        best = min(("ufl_fista", "ufl_per_patch"), key=lambda name: result[f"{name}_seconds{suffix}"])
        result[f"goal_met{suffix}"] = bool(result[f"{best}_gap_percent{suffix}"] <= 0.05
                                           and result[f"{best}_time_vs_spams{suffix}"] <= 0.25)
    result["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps({key: round(value, 5) if isinstance(value, float) else value
                      for key, value in result.items()}))


if __name__ == "__main__":
    main()
