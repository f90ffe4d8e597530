"""Dataset statistics as Beam CombineFns: one pass, float64, mergeable in any order, reproducible.

``Moments`` holds count, mean and the centered scatter matrix of ``(m, d)`` blocks of patches, merged with
Chan et al.'s pairwise update, which stays accurate where ``sum(x x^T) - n mean mean^T`` loses digits; it
also tracks the global min and max. ``OrderedMomentsCombineFn`` combines per-unit moments
``(unit_index, Moments)`` in one pass along a fixed tree (units folded in index order in groups of
``FAN_IN``, groups likewise), so the float64 result is bit-identical whatever the runner, the bundles or the
merge order: DATA/ stays byte-identical across runs.
``step_statistics`` turns moments into the stats.npz arrays a normalization step needs (``STATS_KEYS`` of
normalize.py), the same arrays ``normalize.fit_statistics`` computes in memory.
"""
from __future__ import annotations

from typing import Optional

import apache_beam as beam
import numpy as np
from threadpoolctl import threadpool_limits

from ufl.pipeline.normalize import variance_gain, zca_whitening_matrix


def single_threaded_blas():
    """Context manager: numpy's BLAS on one thread. Beam already runs one worker per core; multi-threaded
    OpenBLAS on a busy machine spin-waits (a 256x256 eigh measured 3.6 s instead of 0.07 s)."""
    return threadpool_limits(limits=1, user_api="blas")


class Moments:
    """Running count, mean ``(d,)``, scatter ``(d, d)`` (sum of centered outer products), min and max."""

    __slots__ = ("count", "mean", "scatter", "minimum", "maximum")

    def __init__(self, count=0, mean=None, scatter=None, minimum=np.inf, maximum=-np.inf):
        self.count, self.mean, self.scatter = count, mean, scatter
        self.minimum, self.maximum = minimum, maximum

    @classmethod
    def of(cls, block: np.ndarray, with_scatter: bool) -> "Moments":
        data = np.asarray(block, dtype=np.float64)
        if len(data) == 0:
            return cls()
        mean = data.mean(axis=0)
        scatter = None
        if with_scatter:
            centered = data - mean
            scatter = centered.T @ centered
        return cls(len(data), mean, scatter, float(data.min()), float(data.max()))

    def merge(self, other: "Moments") -> "Moments":
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = None
        if self.scatter is not None and other.scatter is not None:
            scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(count, mean, scatter, min(self.minimum, other.minimum), max(self.maximum, other.maximum))

    def __reduce__(self):
        return Moments, (self.count, self.mean, self.scatter, self.minimum, self.maximum)


class OrderedMomentsCombineFn(beam.CombineFn):
    """Combines ``(unit_index, Moments)`` along a fixed tree, so the result does not depend on merge order.

    The accumulator maps tree nodes ``(level, index)`` to Moments; a node's children are the nodes
    ``(level - 1, index * FAN_IN + k)``. A complete group of children is folded in index order as soon as
    it is present; ``extract_output`` folds the incomplete groups left at the right edge. Memory stays
    below ``FAN_IN`` nodes per level.
    """

    FAN_IN = 16

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, element) -> dict:
        index, moments = element
        accumulator[(0, int(index))] = moments
        return self._collapse(accumulator, (0, int(index) // self.FAN_IN))

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for accumulator in accumulators:
            for node, moments in accumulator.items():
                merged[node] = moments
                merged = self._collapse(merged, (node[0], node[1] // self.FAN_IN))
        return merged

    def _collapse(self, accumulator: dict, parent) -> dict:
        level, index = parent
        while True:
            children = [(level, index * self.FAN_IN + k) for k in range(self.FAN_IN)]
            if not all(child in accumulator for child in children):
                return accumulator
            accumulator[(level + 1, index)] = self._fold([accumulator.pop(child) for child in children])
            level, index = level + 1, index // self.FAN_IN

    @staticmethod
    def _fold(moments_list) -> Moments:
        total = Moments()
        for moments in moments_list:
            total = total.merge(moments)
        return total

    def extract_output(self, accumulator: dict) -> Moments:
        nodes = dict(accumulator)
        while len(nodes) > 1:
            level = min(node[0] for node in nodes)
            parents: dict = {}
            for node in sorted(n for n in nodes if n[0] == level):
                parents.setdefault(node[1] // self.FAN_IN, []).append(nodes.pop(node))
            for index, children in parents.items():
                nodes[(level + 1, index)] = self._fold(children)
        return next(iter(nodes.values())) if nodes else Moments()


def step_statistics(step: str, moments: Moments, *, zca_epsilon: float, target_variance: float = 1.0) -> dict:
    """The stats.npz arrays of normalization ``step`` from the moments of its input patches (``zca`` and
    ``variance`` need moments with the scatter matrix)."""
    if moments.count == 0:
        return {}
    if step == "scale":
        return {"scale_min": np.float64(moments.minimum), "scale_max": np.float64(moments.maximum)}
    if step == "mean":
        return {"mean": moments.mean}
    if step == "zca":
        covariance = moments.scatter / moments.count  # biased, as np.cov(bias=True)
        return {"zca_mean": moments.mean, "whitening": zca_whitening_matrix(covariance, epsilon=zca_epsilon)}
    if step == "variance":
        mean_pixel_variance = float(np.trace(moments.scatter)) / moments.count / len(moments.mean)
        return {"variance_gain": variance_gain(mean_pixel_variance, target_variance=target_variance)}
    return {}


def merge_stats(moments: Moments, previous: Optional[dict], *, step: str, zca_epsilon: float,
                target_variance: float = 1.0) -> dict:
    """``previous`` stats plus those of ``step``: the Map that chains one statistics pass to the next."""
    stats = dict(previous or {})
    with single_threaded_blas():
        stats.update(step_statistics(step, moments, zca_epsilon=zca_epsilon, target_variance=target_variance))
    return stats
