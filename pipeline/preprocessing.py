"""``ufl preprocess`` as a Beam pipeline: images -> patches -> normalization -> DATA/ (docs/contracts.md).

The pipeline, one labelled step per line (the DoFns are in transforms.py)::

  ListInputs           the source's units (files, photos, ranges of array rows), numbered
  UnitMoments_<i>_<s>  for each normalization step that needs statistics: read each unit, cut the raw
                       patches of its train images, apply the steps before it (their statistics as a side
                       input), and take the unit's moments (count, mean, scatter, min, max)
  Moments_<i>_<s>      combine them (one CombineFn pass, fixed merge tree: reproducible to the bit)
  Stats_<i>_<s>        mean / ZCA matrix / min-max of the step, merged with the earlier steps' ones
  AssignShards         unit i -> shard i mod num_shards
  GroupByShard
  WriteShards          re-read the shard's units in order, cut, normalize (statistics as side input),
                       write train/eval GZIP TFRecords; yield counts and rejected inputs
  CombineSummaries
  WriteSummary         stats.npz, rejected.jsonl and the counts

Only small things cross Beam's shuffles (unit descriptors, moments, counts): writers recompute patches
rather than receive them, and each shard's content and order depend only on the units it owns, so the same
seed gives byte-identical files on any runner. The last step depends on every other one (the Dask runner
computes only the graph leading to the last step). Everything is written into a temporary sibling of DATA/,
metadata.json last, and renamed into place when complete.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import threading
import time
import uuid
from typing import Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from ufl import __version__
from ufl.config.base import ConfigError, to_jsonable
from ufl.errors import RejectionError
from ufl.pipeline import layout
from ufl.pipeline.analyzers import OrderedMomentsCombineFn, merge_stats
from ufl.pipeline.normalize import CONTRAST_EPSILON, SCATTER_STEPS, STATS_KEYS
from ufl.pipeline.patches import ExtractOptions
from ufl.pipeline.runner import make_pipeline
from ufl.pipeline.sources import ArraySource, Source, open_source
from ufl.pipeline.transforms import (SUMMARY_FILE, SummaryCombineFn, UnitMomentsFn, WriteShardFn, write_bytes,
                                     write_summary)

DEFAULT_BEAM_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
#: Counters reported at the end of a run (Metrics.counter namespace ``ufl``).
COUNTERS = ("images_read", "images_rejected", "patches_train", "patches_eval", "shards_written")


def build_pipeline(pipeline: beam.Pipeline, source: Source, units: list, options: ExtractOptions, config,
                   out_dir: str) -> None:
    """Adds the steps of ``config`` (a PreprocessConfig) to ``pipeline``, writing into ``out_dir``."""
    steps, contrast_epsilon = tuple(config.normalize), CONTRAST_EPSILON
    inputs = pipeline | "ListInputs" >> beam.Create(list(enumerate(units)))
    stats = None
    for index, step in enumerate(steps):
        if step not in STATS_KEYS:
            continue
        previous = beam.pvalue.AsSingleton(stats) if stats is not None else {}
        unit_moments = inputs | f"UnitMoments_{index}_{step}" >> beam.ParDo(
            UnitMomentsFn(source, options, eval_fraction=config.eval_fraction, steps=steps[:index],
                          contrast_epsilon=contrast_epsilon, with_scatter=step in SCATTER_STEPS,
                          eval_split=config.eval_split), previous)
        moments = unit_moments | f"Moments_{index}_{step}" >> beam.CombineGlobally(OrderedMomentsCombineFn())
        stats = moments | f"Stats_{index}_{step}" >> beam.Map(
            merge_stats, previous, step=step, zca_epsilon=config.zca_epsilon,
            target_variance=config.target_variance)
    stats_side = beam.pvalue.AsSingleton(stats) if stats is not None else None
    num_shards = config.num_shards
    writer = WriteShardFn(source, options, eval_fraction=config.eval_fraction, steps=steps,
                          contrast_epsilon=contrast_epsilon, out_dir=out_dir, num_shards=num_shards,
                          eval_split=config.eval_split)
    (inputs
     | "AssignShards" >> beam.Map(lambda item: (item[0] % num_shards, item))
     | "GroupByShard" >> beam.GroupByKey()
     | "WriteShards" >> beam.ParDo(writer, stats=stats_side)
     | "CombineSummaries" >> beam.CombineGlobally(SummaryCombineFn())
     | "WriteSummary" >> beam.Map(write_summary, out_dir, stats_side))


def beam_options(pipeline_args: Sequence[str]) -> PipelineOptions:
    """Beam options from ``pipeline_args``; DirectRunner with 2 worker processes unless the user chose."""
    args = list(pipeline_args)
    if not any(arg.startswith(("--runner", "--direct_running_mode", "--direct_num_workers")) for arg in args):
        args += DEFAULT_BEAM_ARGS
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # worker processes log every bundle at INFO
    return PipelineOptions(args)


def check_output(config) -> None:
    """Refuses before any work to replace a complete DATA/ without ``overwrite``, or a non-ufl folder."""
    out = config.out.rstrip("/")
    if FileSystems.exists(FileSystems.join(out, layout.METADATA_FILE)):
        if not config.overwrite:
            raise ConfigError(f"out {config.out!r} already holds a complete ufl DATA/ directory; pass "
                              "--overwrite to replace it or choose another --out")
    elif listing(out):
        raise ConfigError(f"out {config.out!r} is a non-empty folder that is not a ufl DATA/ directory "
                          "(no metadata.json); choose an empty or new --out")


def check_eval_split(config, source: Source) -> None:
    """``--eval-split source`` needs a source with its own test images."""
    if config.eval_split == "source" and "test" not in source.split_names:
        raise ConfigError(f"source {config.source} has no train/test split of its own, so --eval-split source "
                          "has no test images to hold out; use --eval-split hash (the default) or a source "
                          "with one, such as builtin:mnist, builtin:fashion-mnist or an npz in Keras' layout")


def patch_shape(config, source: Source) -> Tuple[int, int]:
    """(rows, cols) of the samples: ``patch_size`` squared, or an array source's image size for ``full``."""
    if config.patch_size is not None:
        return config.patch_size, config.patch_size
    if isinstance(source, ArraySource):
        rows, cols = source.arrays().images.shape[1:3]
        return int(rows), int(cols)
    raise ConfigError(f"extract 'full' without --patch-size needs images of one known size; source "
                      f"{config.source} has images of differing sizes: pass --patch-size")


def temporary_sibling(out: str) -> str:
    """A new hidden sibling of ``out`` (absolute when local, so workers in other folders find it too)."""
    out = out.rstrip("/") if is_remote(out) else os.path.abspath(out)
    parent, name = os.path.split(out)
    return FileSystems.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def is_remote(path: str) -> bool:
    return "://" in path


def listing(folder: str) -> list:
    """Paths of the files directly in ``folder`` (empty when it does not exist)."""
    if not is_remote(folder):
        return [os.path.join(folder, name) for name in os.listdir(folder)] if os.path.isdir(folder) else []
    try:
        return [item.path for item in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    except Exception:  # an absent prefix matches nothing
        return []


def move_dir(source: str, destination: str) -> None:
    """Renames a folder: one rename locally; file by file on object stores (gs://, s3://), which have none,
    with metadata.json last so that the destination looks complete only when it is."""
    if not is_remote(source):
        os.replace(source, destination)
        return
    files = sorted(listing(source), key=lambda path: path.endswith("/" + layout.METADATA_FILE))
    for path in files:
        FileSystems.rename([path], [FileSystems.join(destination, path.rsplit("/", 1)[1])])


def publish(temp_dir: str, out: str) -> None:
    """Moves the complete ``temp_dir`` to ``out``, replacing an old DATA/ only once the new one is whole."""
    out = out.rstrip("/")
    if is_remote(out):
        old_files = listing(out)
        metadata = [path for path in old_files if path.endswith("/" + layout.METADATA_FILE)]
        if metadata:  # first: the old DATA/ stops looking complete before it changes
            FileSystems.delete(metadata)
        if old_files:
            FileSystems.delete([path for path in old_files if path not in metadata])
        move_dir(temp_dir, out)
        return
    old = None
    if os.path.exists(out):
        old = temporary_sibling(out) + "-old"
        move_dir(out, old)
    move_dir(temp_dir, out)
    if old is not None:
        remove_dir(old)


def remove_dir(path: str) -> None:
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
    elif listing(path):
        FileSystems.delete(listing(path))


def preprocess(config, pipeline_args: Sequence[str] = (), *, verbose: bool = False) -> dict:
    """Runs ``ufl preprocess``: reads ``config.source``, writes DATA/ at ``config.out``.

    Args:
      config: a ``ufl.config.PreprocessConfig`` (validated).
      pipeline_args: Beam pipeline options (``--runner=...``, ``--direct_num_workers=...`` ...); default
        DirectRunner with 2 worker processes.
      verbose: print progress and the Beam counters.
    Returns:
      The metadata written to DATA/metadata.json.
    Raises:
      ConfigError: bad input (before any work when possible), or too many rejected inputs.

    Example (4x4 patches of the 8x8 digits, Beam in this process):
      >>> from ufl.config import PreprocessConfig
      >>> config = PreprocessConfig(source="builtin:digits", out="work/digits-data", patch_size=4,
      ...                           patches_per_image=30)
      >>> metadata = preprocess(config, ["--direct_running_mode=in_memory"])
      >>> metadata["patch_size"], metadata["channels"], metadata["counts"]["patches"]["train"] > 0
      ([4, 4], 1, True)
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    source = open_source(config.source, color=config.color, tfds_data_dir=config.tfds_data_dir)
    check_output(config)
    source.check()
    check_eval_split(config, source)
    options = ExtractOptions(patch_shape(config, source), config.extract, config.patches_per_image,
                             config.stride, config.min_std, config.seed)
    units = source.units()
    temp_dir = temporary_sibling(config.out)
    FileSystems.mkdirs(temp_dir)
    say = print if verbose else (lambda *args, **kwargs: None)
    say(f"ufl preprocess: {config.source}: {len(units)} input unit(s) -> {config.out} "
        f"({options.patch_shape[0]}x{options.patch_shape[1]}x{config.channels} {config.extract} samples, "
        f"normalize {','.join(config.normalize) or 'none'})", flush=True)
    try:
        summary = run_pipeline(source, units, options, config, temp_dir, pipeline_args, verbose)
        check_rejections(summary, config, temp_dir)
        summary["shards_written"] = finish_shards(temp_dir, summary, config.num_shards)
        metadata = build_metadata(config, options, source, summary, started)
        write_bytes(FileSystems.join(temp_dir, layout.CONFIG_FILE),
                    (json.dumps(to_jsonable(config), indent=2, sort_keys=True) + "\n").encode())
        write_bytes(FileSystems.join(temp_dir, layout.METADATA_FILE),
                    (json.dumps(metadata, indent=2) + "\n").encode())
        FileSystems.delete([FileSystems.join(temp_dir, SUMMARY_FILE)])
        publish(temp_dir, config.out)
    except RejectionError:
        raise
    except BaseException:
        remove_dir(temp_dir)
        raise
    say(counter_summary(metadata["counts"]), flush=True)
    return metadata


def run_pipeline(source, units, options: ExtractOptions, config, temp_dir: str,
                 pipeline_args: Sequence[str], verbose: bool) -> dict:
    """Runs the Beam pipeline that writes shards, stats and rejections into ``temp_dir``; returns its summary."""
    pipeline = make_pipeline(beam_options(pipeline_args))
    build_pipeline(pipeline, source, units, options, config, temp_dir)
    with Progress(temp_dir, config.num_shards, sys.stdout if verbose else None):  # some runners finish in run()
        result = pipeline.run()
        try:
            result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)  # the Dask runner's own client: close it once done
            if client is not None:
                client.close()
    with FileSystems.open(FileSystems.join(temp_dir, SUMMARY_FILE)) as handle:
        return json.loads(handle.read().decode("utf-8"))


class Progress:
    """While the pipeline runs, shows how many shard files of DATA/ have been written (a bar on a terminal).

    Reads the temporary folder, so it works on any runner whose output the driver can see. Before the first
    shard appears (inputs read, statistics computed) it says so every ``interval`` seconds.
    """

    def __init__(self, out_dir: str, num_shards: int, stream=None, interval: float = 15.0, poll: float = 2.0):
        """``stream``: where to show progress (None: nowhere); ``poll``: seconds between looks at the folder."""
        self.out_dir, self.num_shards, self.stream = out_dir, num_shards, stream
        self.interval, self.poll = interval, poll
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.report, daemon=True)
        self.started = time.monotonic()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(timeout=self.poll + 1.0)

    def shard_count(self) -> int:
        try:
            return len(FileSystems.match([FileSystems.join(self.out_dir, "*.tfrecord.gz")])[0].metadata_list)
        except Exception:  # progress is best effort
            return 0

    def report(self):
        from ufl.progress import progress

        bar, shown, last_line = None, 0, time.monotonic()
        while not self.stop.wait(self.poll):
            shards = self.shard_count()
            if shards and bar is None:
                bar = progress(2 * self.num_shards, desc="ufl preprocess: shard files (train + eval)",
                               unit="shard", enabled=self.stream is not None, stream=self.stream,
                               interval=self.interval)
            if bar is not None:
                bar.update(shards - shown)
                shown = shards
            elif self.stream is not None and time.monotonic() - last_line >= self.interval:
                last_line = time.monotonic()
                print(f"ufl preprocess: {last_line - self.started:.0f} s: reading inputs, computing statistics",
                      file=self.stream, flush=True)
        if bar is not None:
            bar.close()


def check_rejections(summary: dict, config, temp_dir: str) -> None:
    """Fails (keeping the temporary folder with rejected.jsonl) when too much input was unusable."""
    read, rejected = summary["images_read"], summary["images_rejected"]
    reasons = "; ".join(f"{source}: {reason}" for source, reason in sorted(summary["rejected"])[:3])
    where = FileSystems.join(temp_dir, layout.REJECTED_FILE)
    if summary["patches"]["train"] == 0:
        raise RejectionError(f"source {config.source} gave no training patches ({rejected} of {read} inputs "
                             f"rejected{': ' + reasons if reasons else ''}); see {where}, fix the inputs or "
                             "lower --patch-size / --min-std / --eval-fraction")
    if read and rejected / read > config.max_reject_fraction:
        raise RejectionError(f"{rejected} of {read} inputs of {config.source} were rejected, more than "
                             f"--max-reject-fraction {config.max_reject_fraction} ({reasons}); see {where}")


def finish_shards(out_dir: str, summary: dict, num_shards: int) -> int:
    """Deletes the (empty) shard files of a split that got no patches, e.g. eval with --eval-fraction 0;
    returns how many shard files DATA/ keeps, counted on disk."""
    for split in layout.SPLITS:
        if summary["patches"][split] == 0:
            FileSystems.delete([FileSystems.join(out_dir, layout.shard_name(split, shard, num_shards))
                                for shard in range(num_shards)])
    return sum(path.endswith(".tfrecord.gz") for path in listing(out_dir))


def build_metadata(config, options: ExtractOptions, source: Source, summary: dict,
                   started: datetime.datetime) -> dict:
    shapes = summary["image_shapes"]
    counts = {"images_read": summary["images_read"], "images_rejected": summary["images_rejected"],
              "patches": summary["patches"], "patches_dropped_flat": summary["patches_dropped_flat"],
              "shards_written": summary["shards_written"]}
    normalization = {"steps": list(config.normalize), "zca_epsilon": config.zca_epsilon,
                     "contrast_epsilon": CONTRAST_EPSILON, "target_variance": config.target_variance,
                     "statistics_from": "train"}
    return layout.data_metadata(
        patch_size=options.patch_shape, channels=config.channels, counts=counts, normalization=normalization,
        source=config.source, num_classes=summary["max_label"] + 1 if source.has_labels else None,
        color=config.color, image_shape=shapes[0] if len(shapes) == 1 else None, extract=config.extract,
        extract_options={"patches_per_image": config.patches_per_image, "stride": config.stride,
                         "min_std": config.min_std, "seed": config.seed},
        eval_fraction=config.eval_fraction, eval_split=config.eval_split, source_splits=list(source.split_names),
        num_shards=config.num_shards, ufl_version=__version__, created=started.isoformat(timespec="seconds"))


def counter_summary(counts: dict) -> str:
    """One line of what was done, from DATA/'s own counts (the same on every runner: some, like Dask, do not
    report Beam's metrics)."""
    values = {"images_read": counts["images_read"], "images_rejected": counts["images_rejected"],
              "patches_train": counts["patches"]["train"], "patches_eval": counts["patches"]["eval"],
              "shards_written": counts["shards_written"]}
    return "ufl preprocess: counters: " + ", ".join(f"{name}={values[name]}" for name in COUNTERS)
