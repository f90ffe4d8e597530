"""The Beam steps of ``ufl preprocess`` as plain DoFns and CombineFns (testable without a runner).

``UnitMomentsFn`` feeds the statistics combiners; ``WriteShardFn`` re-reads a shard's units in order, cuts
and normalizes their patches and streams them into that shard's train/eval files, yielding a summary
(counts, rejected inputs, image shapes, largest label) that ``SummaryCombineFn`` adds up and
``write_summary`` stores with stats.npz and rejected.jsonl. None of them imports TensorFlow.
"""
from __future__ import annotations

import io
import json
import zipfile
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from ufl.pipeline import layout
from ufl.pipeline.analyzers import Moments, single_threaded_blas
from ufl.pipeline.normalize import STATS_KEYS, apply_normalization
from ufl.pipeline.patches import ExtractOptions, extract_patches, is_eval, size_problem
from ufl.pipeline.records import frame_records, gzip_compressor, serialize_examples
from ufl.pipeline.sources import ImageBatch, Rejection, Source

SUMMARY_FILE = "_summary.json"


def usable_batches(source: Source, unit, options: ExtractOptions):
    """``(batch, rejections)`` of one unit: images that can give samples, and Rejections of the others."""
    batches, rejections = [], []
    for item in source.read(unit):
        if isinstance(item, Rejection):
            rejections.append(item)
            continue
        problem = size_problem(item.images.shape[1:], options)
        if problem:
            rejections.extend(Rejection(uri, problem) for uri in item.uris)
        else:
            batches.append(item)
    return batches, rejections


def select(batch: ImageBatch, mask: np.ndarray) -> ImageBatch:
    labels = None if batch.labels is None else batch.labels[mask]
    return ImageBatch([uri for uri, keep in zip(batch.uris, mask) if keep], batch.images[mask], labels,
                      batch.split, [key for key, keep in zip(batch.keys, mask) if keep])


def held_out(batch: ImageBatch, eval_split: str, eval_fraction: float) -> np.ndarray:
    """bool ``(n,)``: which images of ``batch`` go to eval: the source's own test images with
    ``eval_split="source"``, else the ``eval_fraction`` picked by the stable hash of their keys."""
    if eval_split == "source":
        return np.full(len(batch.uris), batch.split == "test")
    return is_eval(batch.keys, eval_fraction)


class UnitMomentsFn(beam.DoFn):
    """(index, unit) -> (index, Moments) of the unit's train patches after ``steps`` (a statistics pass).

    Folds the unit's blocks in order, so each unit's moments are reproducible; every unit yields, even
    one without train patches, so that ``OrderedMomentsCombineFn`` sees the complete set of indices.
    """

    def __init__(self, source: Source, options: ExtractOptions, *, eval_fraction: float, steps: Sequence[str],
                 contrast_epsilon: float, with_scatter: bool, eval_split: str = "hash"):
        self.source, self.options, self.eval_fraction = source, options, eval_fraction
        self.eval_split = eval_split
        self.steps, self.contrast_epsilon, self.with_scatter = tuple(steps), contrast_epsilon, with_scatter

    def process(self, element, stats=None):
        index, unit = element
        moments = Moments()
        with single_threaded_blas():
            for batch in usable_batches(self.source, unit, self.options)[0]:
                train = select(batch, ~held_out(batch, self.eval_split, self.eval_fraction))
                if train.uris:
                    block = extract_patches(train.images, train.keys, self.options).patches
                    block = normalize_block(block, self.steps, stats or {}, self.contrast_epsilon, np.float64)
                    moments = moments.merge(Moments.of(block, self.with_scatter))
        yield index, moments


def normalize_block(block: np.ndarray, steps: Sequence[str], stats: dict, contrast_epsilon: float,
                    dtype=np.float32) -> np.ndarray:
    """``steps`` applied in float64 to a raw ``(m, D)`` block; result in ``dtype`` (float64 between
    statistics passes, float32 in the files)."""
    out = apply_normalization(np.asarray(block, np.float64), steps, stats, contrast_epsilon=contrast_epsilon)
    return out.astype(dtype, copy=False)


class ShardWriter:
    """Streams GZIP TFRecords into one file (opened on the first write, or empty on close)."""

    def __init__(self, path: str):
        self.path, self.handle, self.count = path, None, 0
        self.compressor = gzip_compressor()

    def write(self, records):
        if self.handle is None:
            self.handle = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        self.handle.write(self.compressor.compress(frame_records(records)))
        self.count += len(records)

    def close(self):
        if self.handle is None:
            self.handle = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        self.handle.write(self.compressor.flush())
        self.handle.close()


class WriteShardFn(beam.DoFn):
    """(shard, units) -> writes ``{split}-<shard>-of-N.tfrecord.gz``; yields the shard's summary dict."""

    def __init__(self, source: Source, options: ExtractOptions, *, eval_fraction: float, steps: Sequence[str],
                 contrast_epsilon: float, out_dir: str, num_shards: int, eval_split: str = "hash"):
        self.source, self.options, self.eval_fraction = source, options, eval_fraction
        self.eval_split = eval_split
        self.steps, self.contrast_epsilon = tuple(steps), contrast_epsilon
        self.out_dir, self.num_shards = out_dir, num_shards
        self.counters = {name: Metrics.counter("ufl", name) for name in
                         ("images_read", "images_rejected", "patches_train", "patches_eval", "shards_written")}

    def process(self, element, stats=None):
        with single_threaded_blas():
            yield self.write_shard(element, stats)

    def write_shard(self, element, stats) -> dict:
        shard, units = element
        stats = stats or {}
        needs_stats = any(step in STATS_KEYS for step in self.steps)
        writers = {split: ShardWriter(FileSystems.join(self.out_dir, layout.shard_name(split, shard, self.num_shards)))
                   for split in layout.SPLITS}
        summary = empty_summary()
        for _, unit in sorted(units, key=lambda item: item[0]):
            batches, rejections = usable_batches(self.source, unit, self.options)
            read = sum(len(batch.uris) for batch in batches) + len(rejections)
            summary["images_read"] += read
            summary["images_rejected"] += len(rejections)
            summary["rejected"].extend([r.source, r.reason] for r in rejections)
            self.counters["images_read"].inc(read)
            self.counters["images_rejected"].inc(len(rejections))
            for batch in batches:
                shape = list(batch.images.shape[1:])
                if shape not in summary["image_shapes"] and len(summary["image_shapes"]) < 2:
                    summary["image_shapes"].append(shape)
                if batch.labels is not None and len(batch.labels):
                    summary["max_label"] = max(summary["max_label"], int(batch.labels.max()))
                to_eval = held_out(batch, self.eval_split, self.eval_fraction)
                for split, mask in (("train", ~to_eval), ("eval", to_eval)):
                    if mask.any():
                        self.write_split(writers[split], select(batch, mask), stats, needs_stats, summary, split)
        for writer in writers.values():
            writer.close()
        self.counters["shards_written"].inc()
        return summary

    def write_split(self, writer, batch, stats, needs_stats, summary, split):
        block = extract_patches(batch.images, batch.keys, self.options)
        summary["patches_dropped_flat"] += block.dropped
        if not len(block.patches) or (needs_stats and not stats):
            return  # no train patches at all means no statistics: the driver reports it
        patches = normalize_block(block.patches, self.steps, stats, self.contrast_epsilon)
        sources = [batch.uris[i].encode("utf-8") for i in block.image_index]
        labels = None if batch.labels is None else batch.labels[block.image_index]
        source_split = None if batch.split is None else batch.split.encode("utf-8")
        writer.write(serialize_examples(patches, sources, block.positions, labels, source_split))
        summary["patches"][split] += len(patches)
        self.counters[f"patches_{split}"].inc(len(patches))


def empty_summary() -> dict:
    return {"images_read": 0, "images_rejected": 0, "patches": {"train": 0, "eval": 0},
            "patches_dropped_flat": 0, "rejected": [], "image_shapes": [], "max_label": -1}


class SummaryCombineFn(beam.CombineFn):
    """Adds up the shards' summaries (counts, rejected inputs, up to two distinct image shapes, max label)."""

    def create_accumulator(self):
        return empty_summary()

    def add_input(self, total, summary):
        for key in ("images_read", "images_rejected", "patches_dropped_flat"):
            total[key] += summary[key]
        for split in layout.SPLITS:
            total["patches"][split] += summary["patches"][split]
        total["rejected"].extend(summary["rejected"])
        for shape in summary["image_shapes"]:
            if shape not in total["image_shapes"] and len(total["image_shapes"]) < 2:
                total["image_shapes"].append(shape)
        total["max_label"] = max(total["max_label"], summary["max_label"])
        return total

    def merge_accumulators(self, accumulators):
        total = empty_summary()
        for accumulator in accumulators:
            total = self.add_input(total, accumulator)
        return total

    def extract_output(self, total):
        return total


def write_npz(path: str, arrays: dict) -> None:
    """np.savez without timestamps (fixed zip dates, sorted keys), so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(arrays[key]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), data.getvalue())
    write_bytes(path, buffer.getvalue())


def write_bytes(path: str, data: bytes) -> None:
    handle = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        handle.write(data)
    finally:
        handle.close()


def write_summary(summary: dict, out_dir: str, stats: Optional[dict]) -> None:
    """Writes stats.npz, rejected.jsonl (sorted) and the summary the driver turns into metadata.json."""
    write_npz(FileSystems.join(out_dir, layout.STATS_FILE), stats or {})
    lines = [json.dumps({"source": source, "reason": reason}) + "\n"
             for source, reason in sorted(summary["rejected"])]
    write_bytes(FileSystems.join(out_dir, layout.REJECTED_FILE), "".join(lines).encode("utf-8"))
    write_bytes(FileSystems.join(out_dir, SUMMARY_FILE), json.dumps(summary).encode("utf-8"))
