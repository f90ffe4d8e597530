"""PreprocessConfig: everything ``ufl preprocess`` needs, validated before any work starts."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from ufl.config.base import ConfigError, require, require_choice

SOURCE_SCHEMES = ("builtin", "images", "npy", "npz", "mat", "tfds")
BUILTIN_SOURCES = ("natural", "digits", "faces", "mnist10k", "mnist", "fashion-mnist")
EVAL_SPLITS = ("hash", "source")
EXTRACT_MODES = ("random", "grid", "center", "full")
COLOR_MODES = ("gray", "rgb")
NORMALIZATION_STEPS = ("none", "scale", "contrast", "mean", "zca", "variance")


def parse_normalization(spec: str) -> Tuple[str, ...]:
    """'contrast,zca' -> ('contrast', 'zca'); 'none' -> (). Raises ConfigError on unknown steps."""
    steps = tuple(step.strip() for step in spec.split(",") if step.strip())
    for step in steps:
        require_choice("normalize step", step, NORMALIZATION_STEPS)
    if "none" in steps and len(steps) > 1:
        raise ConfigError(f"normalize {spec!r} is invalid; 'none' cannot be combined with other steps")
    return tuple(step for step in steps if step != "none")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Config of the Beam preprocessing stage (images -> normalized patch TFRecords).

    Attributes:
      source: source spec, SCHEME:ARG (e.g. ``builtin:natural``, ``images:/data/*.png``,
        ``npz:digits.npz:images``, ``tfds:mnist:train``).
      out: the DATA/ directory to write (any Beam/TF filesystem path).
      patch_size: side P of the square P x P patches (> 0). With ``extract="full"`` the image size
        must equal it, unless ``patch_size`` is None (then the images' own size is used).
      color: ``gray`` (1 channel) or ``rgb`` (3 channels).
      extract: ``random`` | ``grid`` | ``center`` | ``full``.
      patches_per_image: patches drawn per image with ``extract="random"`` (> 0).
      stride: step between grid patches with ``extract="grid"`` (> 0; default: patch_size).
      min_std: drop patches whose pixel standard deviation (in [0,1] units) is below it (>= 0).
      eval_fraction: fraction of sources put in the eval split, by a stable hash of the image's key
        in [0, 1) (with ``eval_split="hash"``).
      eval_split: how images are held out for eval: ``hash`` (``eval_fraction`` of them, by a stable hash
        of their key) or ``source`` (the source's own test images, e.g. MNIST's 10,000).
      normalize: normalization steps in order, from ``none|scale|contrast|mean|zca|variance``.
      zca_epsilon: regularizer added to the covariance eigenvalues before whitening (> 0).
      target_variance: pixel variance of the patches after the ``variance`` step (> 0; default 1.0).
      seed: seed of the random patch positions; same seed -> identical patches.
      num_shards: TFRecord shards per split (>= 1).
      max_reject_fraction: fail when more than this fraction of inputs is rejected, in [0, 1].
      overwrite: replace an existing complete DATA/.
      tfds_data_dir: where ``tfds:`` sources look for prepared datasets (default: TFDS's own).
    """

    source: str
    out: str
    patch_size: Optional[int] = 16
    color: str = "gray"
    extract: str = "random"
    patches_per_image: int = 1000
    stride: Optional[int] = None
    min_std: float = 0.0
    eval_fraction: float = 0.1
    eval_split: str = "hash"
    normalize: Tuple[str, ...] = ("contrast", "zca")
    zca_epsilon: float = 0.01
    target_variance: float = 1.0
    seed: int = 0
    num_shards: int = 4
    max_reject_fraction: float = 0.5
    overwrite: bool = False
    tfds_data_dir: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.normalize, str):
            object.__setattr__(self, "normalize", parse_normalization(self.normalize))
        else:
            object.__setattr__(self, "normalize", parse_normalization(",".join(self.normalize) or "none"))
        self.validate()

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def validate(self) -> None:
        require(":" in self.source, "source", self.source,
                "use SCHEME:ARG with SCHEME one of " + ", ".join(SOURCE_SCHEMES)
                + " (e.g. builtin:natural, images:'photos/*.png', npz:data.npz:images)")
        require_choice("source scheme", self.scheme, SOURCE_SCHEMES)
        if self.scheme == "builtin":
            require_choice("builtin source", self.source.split(":", 1)[1], BUILTIN_SOURCES)
        require(bool(self.out), "out", self.out, "give the DATA/ directory to write with --out")
        if self.patch_size is not None:
            require(isinstance(self.patch_size, int) and self.patch_size > 0, "patch_size",
                    self.patch_size, "use --patch-size with a positive integer such as 16")
        else:
            require(self.extract == "full", "patch_size", self.patch_size,
                    "only --extract full may omit --patch-size")
        require_choice("color", self.color, COLOR_MODES)
        require_choice("extract", self.extract, EXTRACT_MODES)
        require(self.patches_per_image > 0, "patches_per_image", self.patches_per_image,
                "use --patches-per-image with a positive integer")
        require(self.stride is None or self.stride > 0, "stride", self.stride,
                "use --stride with a positive integer")
        require(self.min_std >= 0, "min_std", self.min_std, "use --min-std >= 0")
        require(0.0 <= self.eval_fraction < 1.0, "eval_fraction", self.eval_fraction,
                "use --eval-fraction in [0, 1), e.g. 0.1")
        require_choice("eval_split", self.eval_split, EVAL_SPLITS)
        require(self.zca_epsilon > 0, "zca_epsilon", self.zca_epsilon, "use --zca-epsilon > 0")
        require(self.target_variance > 0, "target_variance", self.target_variance,
                "use --target-variance > 0, e.g. 0.0005 for the sparse-coding-demo preset")
        require(self.num_shards >= 1, "num_shards", self.num_shards, "use --num-shards >= 1")
        require(0.0 <= self.max_reject_fraction <= 1.0, "max_reject_fraction",
                self.max_reject_fraction, "use --max-reject-fraction in [0, 1]")
