"""`ufl run`: the whole batch job on built-in images, as `make run` runs it (one epoch)."""
import json
import os
import subprocess
import sys

import pytest
from test_terminal import NOISE, ufl_command


@pytest.mark.slow
def test_ufl_run_preprocesses_trains_exports_serves_and_checks_the_answer(tmp_path):
    workdir = tmp_path / "work"
    result = ufl_command("run", "--workdir", str(workdir), "--epochs", "1")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "gRPC Predict" in result.stdout  # exit 0 means the served codes equalled the in-process ones
    # ufl's lines only: no TensorFlow C++ / absl notice, no CUDA probing, no Beam worker log
    assert NOISE.search(result.stdout) is None, result.stdout
    assert "ufl serve: serving model sparse-coding version 1" in result.stdout  # the server's own lines stay
    assert (workdir / "data" / "metadata.json").exists()
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert 0 < metrics["mean_nonzeros"] < 64  # sparse codes: a quarter of the 256 atoms at most
    for figure in ("filters.png", "reconstructions.png", "loss.png"):
        assert os.path.getsize(workdir / "run" / "plots" / figure) > 0
    assert (workdir / "models" / "sparse-coding" / "1" / "saved_model.pb").exists()
    assert (workdir / "models" / "models.config").exists()

    rerun = subprocess.run([sys.executable, "-m", "ufl.cli", "run", "--workdir", str(workdir), "--epochs", "1",
                            "--no-serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "reusing complete" in rerun.stdout  # DATA/ is not rebuilt
    assert (workdir / "models" / "sparse-coding" / "2" / "saved_model.pb").exists()  # a new version
