"""`ufl train` on the command line: presets and overrides, errors, kill -9 and resume, a real model."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import test_train_models as models
from ufl.cli import main
from ufl.trainers.registry import model_kinds
from ufl.trainers.run_dir import load_trained_model

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(TESTS_DIR))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    models.make_data(path, rows=256, eval_rows=64)
    return str(path)


def train_args(data_dir, out, *extra):
    return ["train", "test-linear-ae", "--data", data_dir, "--out", str(out), *extra]


def test_overrides_are_parsed_as_json_and_reach_the_run(data_dir, tmp_path, capsys):
    code = main(train_args(data_dir, tmp_path / "run", "--epochs", "1", "--batch-size", "32",
                           "--set", "model.n_codes=4", "--set", "optimizer.name=sgd",
                           "--set", "optimizer.learning_rate=0.05", "--set", "steps_per_execution=2",
                           "--set", "jit_compile=false"))
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == {"kind": "test-linear-ae", "n_codes": 4}
    assert saved["optimizer"] == {"name": "sgd", "learning_rate": 0.05}
    assert (saved["epochs"], saved["batch_size"], saved["steps_per_execution"], saved["jit_compile"]) == (1, 32, 2, False)
    assert saved["checkpoint_every"] == 10  # from the preset
    assert load_trained_model(str(tmp_path / "run")).model.filters().shape == (4, 4, 4, 1)
    output = capsys.readouterr().out
    assert "epoch 1/1  step 8  loss" in output and "ex/s" in output


def test_list_presets_shows_description_data_recipe_and_reference(capsys):
    assert main(["train", "--list-presets"]) == 0
    output = capsys.readouterr().out
    assert "test-linear-ae\n    test model: linear autoencoder" in output
    assert "data:      ufl preprocess --source builtin:digits --out DATA --patch-size 4" in output
    assert "reference: loss 1.0 (made up for tests)" in output


@pytest.mark.parametrize("argv, message", [
    (["train", "no-such-preset"], r"preset 'no-such-preset' is invalid; use one of: .*test-linear-ae"),
    (["train"], r"preset None is invalid; name one of: .*test-linear-ae"),
    (["train", "test-linear-ae", "--set", "model.n_kodes=3"],
     r"--set key 'model.n_kodes' is invalid; use one of: .*model.n_codes.*optimizer.learning_rate"),
    (["train", "test-linear-ae", "--set", "epochs"], r"--set 'epochs' is invalid; use key=value"),
    (["train", "test-linear-ae", "--set", "epochs=0"], r"epochs 0 is invalid; use --epochs with a positive"),
    (["train", "test-linear-ae", "--set", "optimizer.name=adamx"], r"optimizer.name 'adamx' is invalid; use one of"),
    (["train", "test-linear-ae", "--set", "optimizer.learning_rate=-1"],
     r"optimizer.learning_rate -1 is invalid; use a positive number"),
    (["train", "test-linear-ae", "--set", "optimizer.momentum=\"fast\""], r"optimizer \{.*\} is invalid"),
    (["train", "test-linear-ae", "--set", "strategy=tpu"], r"strategy 'tpu' is invalid; use one of: auto"),
    (["train", "test-linear-ae", "--data", "{tmp}/missing"], r"has no metadata.json"),
])
def test_bad_input_is_one_line_error_with_exit_code_2(argv, message, data_dir, tmp_path, capsys):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if "--data" not in argv and argv[1:2] != ["no-such-preset"] and len(argv) > 1:
        argv += ["--data", data_dir]
    argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    import re
    assert re.search(message, error), error


def test_multiworker_without_tf_config_is_refused(monkeypatch):
    from ufl.config.base import ConfigError
    from ufl.trainers.strategy import choose_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="strategy 'multiworker' is invalid without TF_CONFIG"):
        choose_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG '\\{not json' is invalid"):
        choose_strategy("auto")


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_rerun_resumes_and_ends_like_an_uninterrupted_run(data_dir, tmp_path,
                                                                                          capsys):
    extra = ["--epochs", "5", "--set", "model.step_seconds=0.03", "--set", "checkpoint_every=8",
             "--set", "steps_per_execution=4", "--set", "optimizer.name=adam"]
    run_dir = tmp_path / "run"
    script = f"import sys; sys.path.insert(0, {TESTS_DIR!r}); import test_train_models; " \
             "from ufl.cli import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", script, *train_args(data_dir, run_dir, *extra)],
                               env=dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not list((run_dir / "checkpoints").glob("ckpt-*.index")) and time.time() < deadline:
            assert process.poll() is None, "training ended before the test could kill it"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    killed_at = max(int(p.name.split("-")[1].split(".")[0]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))
    assert 8 <= killed_at < 80

    assert main(train_args(data_dir, run_dir, *extra)) == 0  # the same command again
    output = capsys.readouterr().out
    assert f"resuming {run_dir} from step " in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert killed_at <= metrics["resumed_from_step"] < 80 and metrics["steps"] == 80

    # The same training without the kill (and without the sleep, which changes no number).
    assert main(train_args(data_dir, tmp_path / "whole", *extra[:2], "--set", "checkpoint_every=8",
                           "--set", "steps_per_execution=4", "--set", "optimizer.name=adam",
                           "--set", "jit_compile=false")) == 0
    resumed, whole = (load_trained_model(str(path)).model.get_weights() for path in (run_dir, tmp_path / "whole"))
    for a, b in zip(resumed, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif("sparse_coding" not in model_kinds(), reason="trainers/sparse_coding.py is not in the tree")
def test_real_sparse_coding_model_trains_sparse_codes_and_resumes(tmp_path, capsys):
    from ufl.pipeline.tfrecord import write_data_dir

    # Patches made of 2 of 12 random unit atoms each: a sparse model must find codes with few nonzeros.
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(12, 16))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((640, 12))
    for row in codes:
        row[rng.choice(12, 2, replace=False)] = rng.uniform(1.0, 2.0, 2) * rng.choice([-1, 1], 2)
    patches = (codes @ atoms).astype(np.float32)
    write_data_dir(str(tmp_path / "data"), {"train": patches[:512], "eval": patches[512:]},
                   patch_size=(4, 4), channels=1)
    argv = ["train", "sparse-coding", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--batch-size", "64", "--set", "model.n_atoms=12", "--set", "model.sparsity_weight=0.1",
            "--set", "model.max_inference_steps=30",
            "--set", "steps_per_execution=4", "--set", "checkpoint_every=8", "--set", "jit_compile=false"]
    assert main(argv + ["--epochs", "1"]) == 0
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert main(argv + ["--epochs", "2"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 8 and metrics["steps"] == 16
    assert metrics["eval_objective"] < first["eval_objective"]
    assert 0 < metrics["mean_nonzeros"] < 9 and 0 < metrics["sparsity"] < 0.75  # of 12 atoms
    assert (tmp_path / "run" / "plots" / "filters.png").exists()
    assert load_trained_model(str(tmp_path / "run")).model.filters().shape == (12, 4, 4, 1)


def test_train_loads_tensorflow_with_tf_keras_not_keras_3_and_restores_the_environment():
    # Keras 3 (and scikit-learn through it) would add about 1.3 s to every ufl train start-up
    script = ("import os, sys; from ufl.cli import main; code = main(['train', '--list-presets']); "
              "print(code, 'keras' in sys.modules, 'tf_keras' in sys.modules, 'TF_USE_LEGACY_KERAS' in os.environ)")
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            env=environment, timeout=120)
    assert result.stdout.split()[-4:] == ["0", "False", "True", "False"], result.stderr[-2000:]
