"""Local jobs run on Beam's FnApiRunner, never on a Prism binary fetched from the network."""
import json
import os
import shutil
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner

from ufl.cli import main
from ufl.pipeline.runner import make_pipeline


@pytest.fixture
def prism_calls(monkeypatch):
    calls = []

    def refuse(self, pipeline, options):
        calls.append(options)
        raise RuntimeError("ufl jobs must not reach the Prism runner")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return calls


def runner_of(args):
    """The runner ``make_pipeline`` picks for ``args`` (the pipeline is never run, so its temp folder, which
    Beam removes at the end of a run, is removed here)."""
    pipeline = make_pipeline(PipelineOptions(args))
    shutil.rmtree(pipeline.local_tempdir)
    return pipeline.runner


@pytest.mark.parametrize("args", [[], ["--direct_running_mode=in_memory"], ["--direct_num_workers=1"]])
def test_without_runner_the_local_runner_is_fnapi(args):
    assert isinstance(runner_of(args), fn_runner.FnApiRunner)


def test_a_named_runner_is_kept():
    assert type(runner_of(["--runner=DirectRunner"])).__name__ == "SwitchingDirectRunner"


def test_preprocess_never_tries_prism(tmp_path, prism_calls):
    out = tmp_path / "digits"
    assert main(["preprocess", "--source", "builtin:digits", "--extract", "full", "--normalize", "none",
                 "--out", str(out), "--num-shards", "1", "--direct_running_mode=in_memory"]) == 0
    assert json.loads((out / "metadata.json").read_text())["counts"]["patches"]["train"] > 0
    assert prism_calls == []


@pytest.mark.timeout(300, method="thread")  # without the fix the job waits for its workers forever
def test_worker_processes_start_from_a_python_under_a_folder_with_a_space(tmp_path, monkeypatch):
    """A clone in "My Projects/": multi-process workers start from the venv's Python at a path with a space."""
    venv = tmp_path / "My Projects"
    venv.symlink_to(sys.prefix, target_is_directory=True)
    python = venv / os.path.relpath(sys.executable, sys.prefix)
    assert python.exists()
    monkeypatch.setattr(sys, "executable", str(python))
    out = tmp_path / "digits"
    assert main(["preprocess", "--source", "builtin:digits", "--extract", "full", "--normalize", "none",
                 "--out", str(out), "--num-shards", "1", "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2"]) == 0
    assert json.loads((out / "metadata.json").read_text())["counts"]["patches"]["train"] > 0
