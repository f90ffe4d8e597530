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


@pytest.mark.slow
def test_serve_subprocess_answers_grpc_and_rest_then_stops_cleanly_on_sigterm(tmp_path, tmp_path_factory):
    coder = lib.template(tmp_path_factory, 1.0)
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    rest_port = lib.free_port()
    process = subprocess.Popen(
        ufl_command("serve", "--port", "0", "--rest_api_port", str(rest_port), "--model_name", "coder",
                    "--model_base_path", base, "--backend", "ufl", "--file_system_poll_wait_seconds", "0.5"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        ready = process.stdout.readline()
        assert "gRPC API on 127.0.0.1:" in ready, process.stderr.read() if process.poll() is not None else ready
        port = int(ready.split("gRPC API on 127.0.0.1:")[1].split(",")[0].split(";")[0])
        target = f"127.0.0.1:{port}"
        assert client.wait_until_available(target, "coder", timeout=30) == 1
        patches = lib.patches(4)
        np.testing.assert_allclose(client.predict(target, "coder", patches),
                                   lib.in_process(coder, signatures.SERVING_DEFAULT, patches=patches),
                                   rtol=1e-6, atol=1e-7)
        lib.install_version(lib.template(tmp_path_factory, 2.0), base, 2)
        lib.wait_for(lambda: client.wait_until_available(target, "coder", timeout=5) == 2, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/coder", timeout=30) as response:
            states = {entry["version"]: entry["state"] for entry in json.load(response)["model_version_status"]}
        assert states == {"2": "AVAILABLE", "1": "END"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopping" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        client.close_channels()


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
                    "--rest_api_port=0", "--monitoring_config_file=/m.config"),
        cwd=REPO, env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(argv_file.read_text()) == [
        "--port=9000", "--rest_api_port=0", f"--model_config_file={config}", "--enable_batching=true",
        f"--batching_parameters_file={tmp_path / 'batching.config'}", "--file_system_poll_wait_seconds=1",
        "--enable_model_warmup=true", "--monitoring_config_file=/m.config"]


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
    from ufl.export.server import ModelServer, read_batching_parameters

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
