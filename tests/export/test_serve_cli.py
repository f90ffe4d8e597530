"""`ufl serve` on the command line: flags, the tfserving backend, SIGTERM, and an export -> serve round trip."""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import serving_testlib as lib
from ufl.cli import main
from ufl.export import client, signatures

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ufl_command(*args):
    return [sys.executable, "-c", "import sys; from ufl.cli import main; sys.exit(main())", *args]


def test_tfserving_backend_execs_tensorflow_model_server_with_the_same_flags(tmp_path):
    argv_file = tmp_path / "argv.json"
    fake = tmp_path / "bin" / "tensorflow_model_server"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "models.config"
    result = subprocess.run(
        ufl_command("serve", "--model_config_file", str(config), "--enable_batching",
                    "--batching_parameters_file", str(tmp_path / "batching.config"), "--port=9000",
                    "--rest_api_port=0", "--tensorflow_inter_op_parallelism=1", "--monitoring_config_file=/m.config"),
        cwd=REPO, env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(argv_file.read_text()) == [
        "--port=9000", "--rest_api_port=0", f"--model_config_file={config}", "--enable_batching=true",
        f"--batching_parameters_file={tmp_path / 'batching.config'}", "--file_system_poll_wait_seconds=1",
        "--enable_model_warmup=true", "--tensorflow_inter_op_parallelism=1", "--monitoring_config_file=/m.config"]


@pytest.mark.parametrize("argv, message", [
    (["serve"], "give exactly one of --model_base_path"),
    (["serve", "--model_base_path", "m", "--model_config_file", "c"], "give exactly one of --model_base_path"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "tfserving"], "needs tensorflow_model_server on PATH"),
    (["serve", "--model_base_path", "{tmp}/missing", "--backend", "ufl"],
     "base_path .*missing' of model 'default' is not a directory"),
    (["serve", "--model_config_file", "{tmp}/models.config", "--backend", "ufl"],
     "model_config_file .* does not exist"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--grpc_channel_arguments", "x=1"],
     "grpc_channel_arguments item 'x=1' is invalid"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--tensorflow_intra_op_parallelism=-1"],
     "--tensorflow_intra_op_parallelism -1 is negative"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--monitoring_config_file=x"],
     r"unrecognized arguments \['--monitoring_config_file=x'\]"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ufl serve: error:") and len(error.splitlines()) == 1
    assert re.search(message, error)


@pytest.mark.slow
def test_exported_model_served_equals_the_savedmodel_in_process(toy_export):
    """ufl export (a tiny RUN/) -> ufl serve -> gRPC and REST answers == tf.saved_model.load answers."""
    from ufl.export.model_manager import ModelManager, read_model_config_file
    from ufl.export.batching import read_batching_parameters
    from ufl.export.server import ModelServer

    models = toy_export["models"]
    raw = toy_export["raw"][:32]
    loaded = tf.saved_model.load(toy_export["path"])
    expected = loaded.signatures[signatures.SERVING_DEFAULT](patches=tf.constant(raw))[signatures.CODES_OUTPUT].numpy()
    manager = ModelManager(read_model_config_file(os.path.join(models, signatures.MODEL_CONFIG_FILE)),
                           poll_wait_seconds=0)
    batching = read_batching_parameters(os.path.join(models, signatures.BATCHING_CONFIG_FILE))
    with ModelServer(manager, port=0, rest_api_port=0, batching=batching) as server:
        target = f"127.0.0.1:{server.port}"
        assert client.wait_until_available(target, "toy", timeout=30) == 1
        np.testing.assert_allclose(client.predict(target, "toy", raw), expected, rtol=1e-5, atol=1e-6)
        body = json.dumps({"instances": raw.tolist()}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.rest_api_port}/v1/models/toy:predict", data=body), timeout=30) as response:
            served = np.asarray(json.load(response)["predictions"], np.float32)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(expected) > 0
    client.close_channels()


@pytest.mark.slow
def test_ufl_train_export_serve_round_trip(tmp_path):
    """A tiny `ufl train` -> `ufl export` -> `ufl serve` (a subprocess, as deployed): served codes equal the
    SavedModel's codes in process; a second export is picked up by the poll and the first version unloaded;
    SIGTERM stops the server cleanly."""
    import ufl
    from ufl.pipeline.tfrecord import write_data_dir

    with np.load(os.path.join(os.path.dirname(ufl.__file__), "data", "mnist10k.npz")) as archive:
        chosen = np.random.default_rng(0).permutation(len(archive["labels"]))[:320]
        images = archive["images"][chosen].reshape(len(chosen), -1).astype(np.float32) / 255.0
    data, run, models = (str(tmp_path / name) for name in ("data", "run", "models"))
    write_data_dir(data, {"train": images[:256], "eval": images[256:]}, patch_size=(28, 28), channels=1,
                   source="builtin:mnist10k")
    assert main(["train", "dense-ae", "--data", data, "--out", run, "--epochs", "1", "--batch-size", "64"]) == 0
    assert main(["export", run, "--model-base", models, "--name", "digits"]) == 0
    version_dir = os.path.join(models, "digits", "1")
    expected = tf.saved_model.load(version_dir).signatures[signatures.SERVING_DEFAULT](
        patches=tf.constant(images[256:]))[signatures.CODES_OUTPUT].numpy()
    rest_port = lib.free_port()
    process = subprocess.Popen(
        ufl_command("serve", "--port", "0", "--rest_api_port", str(rest_port), "--backend", "ufl",
                    "--model_config_file", os.path.join(models, signatures.MODEL_CONFIG_FILE), "--enable_batching",
                    "--batching_parameters_file", os.path.join(models, signatures.BATCHING_CONFIG_FILE),
                    "--file_system_poll_wait_seconds", "0.5"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline()
        assert "models: digits (versions [1])" in ready, ready or process.stderr.read()
        target = "127.0.0.1:" + ready.split("gRPC API on 127.0.0.1:")[1].split(",")[0]
        served = client.predict(target, "digits", images[256:])
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
        assert served.shape == (64, 32) and np.ptp(served) > 0
        assert main(["export", run, "--model-base", models, "--name", "digits"]) == 0
        lib.wait_for(lambda: client.wait_until_available(target, "digits", timeout=5) == 2, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/digits", timeout=30) as response:
            states = {entry["version"]: entry["state"] for entry in json.load(response)["model_version_status"]}
        assert states == {"2": "AVAILABLE", "1": "END"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopping" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        client.close_channels()
