"""The same pipeline on a cluster engine: Beam's Dask runner against a local dask.distributed cluster."""
import os

import pytest

from ufl.config import PreprocessConfig
from ufl.pipeline import preprocess


@pytest.mark.slow
def test_dask_runner_writes_the_same_files_as_the_direct_runner(tmp_path):
    distributed = pytest.importorskip("distributed")
    options = dict(source="builtin:digits", extract="full", patch_size=None, normalize="mean,zca",
                   eval_fraction=0.2, num_shards=2)
    direct = tmp_path / "direct"
    preprocess(PreprocessConfig(out=str(direct), **options),
               ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        on_dask = tmp_path / "dask"
        metadata = preprocess(PreprocessConfig(out=str(on_dask), **options),
                              ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                               f"--dask_client_address={cluster.scheduler_address}"])
    assert metadata["counts"]["images_read"] == 1797
    shard_files = [f for f in os.listdir(on_dask) if f.endswith(".tfrecord.gz")]
    assert metadata["counts"]["shards_written"] == len(shard_files) == 4  # 2 train + 2 eval
    names = sorted(f for f in os.listdir(direct) if f.endswith((".gz", ".npz", ".jsonl")))
    assert names == sorted(f for f in os.listdir(on_dask) if f.endswith((".gz", ".npz", ".jsonl")))
    for name in names:
        assert (direct / name).read_bytes() == (on_dask / name).read_bytes(), name
