"""The statistics combiners: equal to numpy, mergeable in any order, bit-identical whatever the order."""
import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from ufl.pipeline.analyzers import Moments, OrderedMomentsCombineFn, step_statistics
from ufl.pipeline.normalize import fit_statistics
from ufl.pipeline.runner import local_runner


def blocks(count=37, seed=0):
    rng = np.random.default_rng(seed)
    # Far-from-zero mean and unequal sizes: where naive sum-of-squares formulas lose digits.
    return [1e3 + rng.standard_normal((int(rng.integers(1, 60)), 6)) * rng.random(6) for _ in range(count)]


def test_moments_combine_fn_in_a_pipeline_equals_numpy():
    """Per-unit moments combined by Beam (bundles and merges chosen by the runner) equal numpy's."""
    data = blocks()
    expected = np.concatenate(data)

    def check(outputs):
        (moments,) = outputs
        assert moments.count == len(expected)
        np.testing.assert_allclose(moments.mean, expected.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(moments.scatter / moments.count, np.cov(expected, rowvar=False, bias=True),
                                   rtol=1e-8)
        assert moments.minimum == expected.min() and moments.maximum == expected.max()

    # on the runner ufl's local jobs use (a bare TestPipeline would try to fetch Beam's Prism runner)
    with test_pipeline.TestPipeline(runner=local_runner(PipelineOptions([]))) as pipeline:
        result = (pipeline | beam.Create(list(enumerate(data)), reshuffle=True)
                  | beam.MapTuple(lambda index, block: (index, Moments.of(block, with_scatter=True)))
                  | beam.CombineGlobally(OrderedMomentsCombineFn()))
        assert_that(result, check)


def test_ordered_combine_is_bit_identical_for_any_grouping_and_order():
    combine = OrderedMomentsCombineFn()
    units = [(index, Moments.of(block, True)) for index, block in enumerate(blocks(count=40))]
    results = []
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(units))
        # Split the inputs into a random number of accumulators, merged in a random order.
        parts = np.array_split(order, seed + 1)
        accumulators = []
        for part in parts:
            accumulator = combine.create_accumulator()
            for index in part:
                accumulator = combine.add_input(accumulator, units[index])
            accumulators.append(accumulator)
        results.append(combine.extract_output(combine.merge_accumulators(accumulators[::-1])))
    for other in results[1:]:
        assert other.count == results[0].count
        assert other.mean.tobytes() == results[0].mean.tobytes()
        assert other.scatter.tobytes() == results[0].scatter.tobytes()
    expected = np.concatenate(blocks(count=40))
    np.testing.assert_allclose(results[0].mean, expected.mean(axis=0), rtol=1e-12)


def test_step_statistics_match_fit_statistics():
    data = np.concatenate(blocks())
    moments = Moments.of(data, True)
    for step in ("scale", "mean", "zca"):
        ours = step_statistics(step, moments, zca_epsilon=0.1)
        reference = fit_statistics(data, [step], zca_epsilon=0.1)
        assert sorted(ours) == sorted(reference)
        for key in ours:
            np.testing.assert_allclose(ours[key], reference[key], rtol=1e-6)
