"""Failed writes on a real full file system: one line naming the path and the fix, exit 1, nothing that
looks complete left behind. The file system is a small tmpfs the test mounts and fills (needs root)."""
import os
import subprocess
import uuid

import pytest

from ufl.cli import main


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A mounted tmpfs with no byte left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root to test a real full file system")
    mount_point = str(tmp_path_factory.mktemp("full-disk"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount_point],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        filler = os.open(os.path.join(mount_point, "filler"), os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:  # full
            pass
        finally:
            os.close(filler)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", mount_point], check=False)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A tiny trained and exported digits model: (DATA/, RUN/, MODELS/NAME)."""
    root = tmp_path_factory.mktemp("digits-model")
    data, run, models = str(root / "data"), str(root / "run"), str(root / "models")
    assert main(["preprocess", "--source", "builtin:digits", "--patch-size", "4", "--patches-per-image", "5",
                 "--out", data, "--direct_running_mode=in_memory"]) == 0
    assert main(["train", "sparse-coding", "--data", data, "--out", run, "--set", "model.n_atoms=8",
                 "--set", "max_steps=2", "--epochs", "1"]) == 0
    assert main(["export", run, "--model-base", models, "--name", "digits", "--warmup-requests", "0"]) == 0
    return data, run, os.path.join(models, "digits")


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ufl ")]


def test_preprocess_on_a_full_disk_says_so_and_leaves_no_data(full_disk, capsys):
    out = os.path.join(full_disk, f"data-{uuid.uuid4().hex[:6]}")
    code = main(["preprocess", "--source", "builtin:digits", "--patch-size", "4", "--patches-per-image", "5",
                 "--out", out, "--direct_running_mode=in_memory"])
    assert code == 1
    (line,) = [line for line in error_lines(capsys) if "error" in line]
    assert line == (f"ufl preprocess: error: writing {out} failed: no space left on device; free space there "
                    "or choose another --out")
    assert not os.path.exists(out)
    assert sorted(os.listdir(full_disk)) == ["filler"]  # the temporary sibling is gone too


def test_export_on_a_full_disk_says_so_and_writes_no_version(full_disk, digits_model, capsys):
    _, run, _ = digits_model
    models = os.path.join(full_disk, "models")
    code = main(["export", run, "--model-base", models, "--name", "digits"])
    assert code == 1
    (line,) = error_lines(capsys)
    assert line == (f"ufl export: error: writing {models}/digits/1 failed: no space left on device; free space "
                    "there or choose another --model-base (no version was written)")
    assert not os.path.exists(os.path.join(models, "digits", "1"))
    assert not [name for name in os.listdir(os.path.join(models, "digits")) if name.startswith(".tmp")]


def test_features_on_a_full_disk_says_so_and_writes_no_file(full_disk, digits_model, capsys):
    _, _, model_dir = digits_model
    out = os.path.join(full_disk, "features.npy")
    code = main(["features", "--model-dir", model_dir, "--source", "builtin:digits", "--out", out,
                 "--no-progress"])
    assert code == 1
    (line,) = [line for line in error_lines(capsys) if "error" in line]
    assert line == (f"ufl features: error: writing {out} failed: no space left on device; free space there or "
                    "choose another --out")
    assert sorted(os.listdir(full_disk)) in (["filler"], ["filler", "models"])


def test_a_read_only_output_is_refused_with_the_path(tmp_path, digits_model, capsys):
    _, _, model_dir = digits_model
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the full-disk tests cover the message")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    out = str(folder / "features.npy")
    assert main(["features", "--model-dir", model_dir, "--source", "builtin:digits", "--out", out,
                 "--no-progress"]) == 1
    assert "permission denied" in capsys.readouterr().err


def test_train_on_a_full_disk_says_so_and_leaves_no_finished_run(full_disk, digits_model, capsys):
    data, _, _ = digits_model
    out = os.path.join(full_disk, f"run-{uuid.uuid4().hex[:6]}")
    code = main(["train", "sparse-coding", "--data", data, "--out", out, "--set", "model.n_atoms=8",
                 "--set", "max_steps=2", "--epochs", "1"])
    assert code == 1
    (line,) = [line for line in error_lines(capsys) if "error" in line]
    assert line.startswith(f"ufl train: error: writing {out} failed: no space left on device")
    assert line.endswith("free space there or choose another --out")
    assert not os.path.exists(os.path.join(out, "metrics.json"))
