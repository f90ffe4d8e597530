"""`ufl serve` on the command line: flags, the tfserving backend, SIGTERM, and an export -> serve round trip."""
import json
import os
import re
import shlex
import signal
import socket
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
    recorder = tmp_path / "record_argv.py"
    recorder.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n")
    # a shell script, not a '#!python' line: a shebang cannot name a Python under a folder with a space
    fake.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(recorder))} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "models.config"
    result = subprocess.run(
        ufl_command("serve", "--model_config_file", str(config), "--enable_batching",
                    "--batching_parameters_file", str(tmp_path / "batching.config"), "--port=9000",
                    "--rest_api_port=0", "--tensorflow_inter_op_parallelism=1", "--monitoring_config_file=/m.config",
                    "--grpc_socket_path=/tmp/s.sock", "--enable_grpc_healthcheck_service",
                    "--enable_serialization_as_tensor_content=true", "--rest_api_timeout_in_ms=500",
                    "--model_config_file_poll_wait_seconds=60", "--rest_api_num_threads=4"),
        cwd=REPO, env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(argv_file.read_text()) == [
        "--port=9000", "--rest_api_port=0", "--grpc_socket_path=/tmp/s.sock", f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=60", "--enable_batching=true",
        f"--batching_parameters_file={tmp_path / 'batching.config'}", "--file_system_poll_wait_seconds=1",
        "--enable_model_warmup=true", "--enable_serialization_as_tensor_content=true",
        "--enable_grpc_healthcheck_service=true", "--rest_api_timeout_in_ms=500", "--monitoring_config_file=/m.config",
        "--tensorflow_inter_op_parallelism=1", "--rest_api_num_threads=4"]


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
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--rest_api_num_threads=4"],
     r"unrecognized arguments \['--rest_api_num_threads=4'\]"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--port", "0"],
     "--port 0 turns the gRPC TCP port off .* give --grpc_socket_path too; for any free port use --free_ports"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "tfserving", "--access_log", "-"],
     "--access_log is ufl serve's own"),
    (["serve", "--model_base_path", "{tmp}", "--backend", "ufl", "--monitoring_config_file", "{tmp}/none"],
     "monitoring_config_file .*none' cannot be read"),
    (["serve", "--model_config_file", "{tmp}/syntax.config", "--backend", "ufl"],
     r"model_config_file .*syntax.config' is not a ModelServerConfig text proto: 1:\d+ :"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "syntax.config").write_text("model_config_list { config { name: 'a' base_path: ")
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ufl serve: error:") and len(error.splitlines()) == 1
    assert re.search(message, error)


def test_a_busy_port_fails_in_one_line_before_any_model_loads(tmp_path, tmp_path_factory):
    base = str(tmp_path / "coder")
    lib.install_version(lib.template(tmp_path_factory), base, 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(ufl_command("serve", "--model_base_path", base, "--backend", "ufl",
                                            "--port", str(port), "--rest_api_port", "0"),
                                cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ufl serve: error: cannot bind the gRPC API to 127.0.0.1:"), result.stderr
    assert "Traceback" not in result.stderr and "serving model" not in result.stderr


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
    process = subprocess.Popen(
        ufl_command("serve", "--free_ports", "--backend", "ufl",
                    "--model_config_file", os.path.join(models, signatures.MODEL_CONFIG_FILE), "--enable_batching",
                    "--batching_parameters_file", os.path.join(models, signatures.BATCHING_CONFIG_FILE),
                    "--file_system_poll_wait_seconds", "0.5"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline()
        assert "models: digits (versions [1])" in ready, ready or process.stderr.read()
        target = "127.0.0.1:" + re.search(r"gRPC API on 127\.0\.0\.1:(\d+)", ready)[1]
        rest_port = re.search(r"REST API on http://127\.0\.0\.1:(\d+)", ready)[1]
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
