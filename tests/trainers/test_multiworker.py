"""A real 2-process MultiWorkerMirroredStrategy run of `ufl train` on localhost."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import test_train_models as models

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(TESTS_DIR))

# Each worker runs `ufl train` and saves the weights its model ended with (read from the loop's
# per-epoch filter logging, which every worker runs) so the test can compare the workers.
WORKER_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {tests_dir!r})
import test_train_models
from ufl.trainers import recorder
from ufl.cli import main

captured = {{}}
log_filters = recorder.log_filters
def remember_model(model, step):
    captured["model"] = model
    return log_filters(model, step)
recorder.log_filters = remember_model
code = main(sys.argv[2:])
np.save(sys.argv[1], np.concatenate([w.ravel() for w in captured["model"].get_weights()]))
sys.exit(code)
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes_the_run(tmp_path):
    models.make_data(tmp_path / "data", rows=256, eval_rows=32, num_shards=1)
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT.format(tests_dir=TESTS_DIR))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
        out = tmp_path / f"run-{index}"  # worker 1 gets its own --out to show that it writes nothing there
        command = [sys.executable, str(script), str(tmp_path / f"weights-{index}.npy"), "train", "test-linear-ae",
                   "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "2",
                   "--set", "checkpoint_every=8", "--set", "optimizer.name=adam"]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=240)[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]

    chief_weights, other_weights = (np.load(tmp_path / f"weights-{i}.npy") for i in range(2))
    np.testing.assert_array_equal(chief_weights, other_weights)
    metrics = json.loads((tmp_path / "run-0" / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["replicas"] == 2
    assert metrics["strategy"] == "multiworker"
    assert metrics["steps"] == 2 * (256 // 16)
    history = [r["loss"] for r in map(json.loads, (tmp_path / "run-0" / "logs" / "history.jsonl").open())
               if r["split"] == "train"]
    assert history[-1] < 0.5 * history[0]
    assert (tmp_path / "run-0" / "checkpoints" / "checkpoint").exists()
    assert not (tmp_path / "run-1").exists()
    assert "epoch 2/2" in outputs[0] and "epoch 2/2" not in outputs[1]
