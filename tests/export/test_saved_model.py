"""ufl export: served graphs equal in-process models, raw pixels in, TF-Serving layout and configs."""
import json
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import tensorflow as tf

from ufl.config import ConfigError, ExportConfig
from ufl.export import signatures as sig
from ufl.export.saved_model import export_run
from ufl.export.versions import list_versions
from ufl.pipeline.normalize import apply_normalization
from ufl.pipeline.tfrecord import read_patches
from ufl.trainers.run_dir import load_trained_model

from tests.export.conftest import make_run, random_patches


def test_served_codes_equal_in_process_codes_with_while_loop(toy_export):
    trained = load_trained_model(toy_export["run"])
    raw = toy_export["raw"][:64]
    loaded = tf.saved_model.load(toy_export["path"])
    served = loaded.signatures[sig.SERVING_DEFAULT](**{sig.PATCHES_INPUT: tf.constant(raw)})[sig.CODES_OUTPUT]
    stats = {k: v.astype(np.float32) for k, v in trained.stats.items()}
    expected = trained.model.encode(apply_normalization(raw, ("contrast", "zca"), stats)).numpy()
    assert np.count_nonzero(expected) > 0 and np.count_nonzero(expected == 0) > 0  # ISTA shrinkage ran
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-4)


def test_raw_pixel_input_agrees_with_data_dir_normalization(toy_export):
    trained = load_trained_model(toy_export["run"])
    batch = next(iter(read_patches(toy_export["data"], "train", batch_size=100)))
    loaded = tf.saved_model.load(toy_export["path"])
    served = loaded.signatures[sig.SERVING_DEFAULT](patches=tf.constant(toy_export["raw"][:100]))["codes"]
    np.testing.assert_allclose(served.numpy(), trained.model.encode(batch["patch"]).numpy(), atol=1e-4)


def test_reconstruct_signature_returns_raw_pixels(toy_export):
    loaded = tf.saved_model.load(toy_export["path"])
    raw = toy_export["raw"][:50]
    out = loaded.signatures[sig.RECONSTRUCT](patches=tf.constant(raw))[sig.RECONSTRUCTION_OUTPUT].numpy()
    np.testing.assert_allclose(out, raw, atol=2e-3)  # identity model: contrast + ZCA undone in the graph


def test_encode_images_pools_sign_split_patch_codes_over_quadrants(toy_export, digits):
    loaded = tf.saved_model.load(toy_export["path"])
    images = digits[0][:3]
    features = loaded.signatures[sig.ENCODE_IMAGES](images=tf.constant(images))[sig.FEATURES_OUTPUT].numpy()
    codes_of = loaded.signatures[sig.SERVING_DEFAULT]
    n_codes = 12
    assert features.shape == (3, 4 * 2 * n_codes)
    for index, image in enumerate(images):
        grid = np.stack([image[r:r + 4, c:c + 4].reshape(-1) for r in range(5) for c in range(5)])
        codes = codes_of(patches=tf.constant(grid))["codes"].numpy().reshape(5, 5, n_codes)
        split = np.concatenate([np.maximum(codes, 0), np.maximum(-codes, 0)], axis=-1)
        quadrants = [split[:2, :2], split[:2, 2:], split[2:, :2], split[2:, 2:]]
        expected = np.concatenate([q.sum(axis=(0, 1)) for q in quadrants])
        np.testing.assert_allclose(features[index], expected, atol=1e-4)


def test_loads_with_plain_tensorflow_without_ufl(toy_export, tmp_path):
    raw = toy_export["raw"][:8]
    np.save(tmp_path / "raw.npy", raw)
    script = (
        "import sys, numpy as np\n"
        "try:\n    import ufl\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('ufl is importable: the check is void')\n"
        "import tensorflow as tf\n"
        f"m = tf.saved_model.load({toy_export['path']!r})\n"
        f"out = m.signatures['serving_default'](patches=tf.constant(np.load({str(tmp_path / 'raw.npy')!r})))\n"
        f"np.save({str(tmp_path / 'codes.npy')!r}, out['codes'].numpy())\n"
    )
    # -S: no site module, so neither the editable install's .pth finder nor the repo is on sys.path.
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": os.environ.get("PATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    served = tf.saved_model.load(toy_export["path"]).signatures["serving_default"](patches=tf.constant(raw))
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), served["codes"].numpy(), atol=1e-6)


def test_export_writes_ufl_asset_warmup_and_server_configs(toy_export):
    from google.protobuf import text_format
    from tensorflow_serving.apis import prediction_log_pb2
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(toy_export["path"], "assets", sig.UFL_ASSET)) as handle:
        info = json.load(handle)
    assert info["kind"] == "export_toy" and info["code_size"] == 12 and info["xla"] is False
    assert info["patch_size"] == [4, 4] and info["normalization"]["steps"] == ["contrast", "zca"]
    assert set(info["signatures"]) == {sig.SERVING_DEFAULT, sig.RECONSTRUCT, sig.ENCODE_IMAGES}

    loaded = tf.saved_model.load(toy_export["path"])
    warmup = os.path.join(toy_export["path"], "assets.extra", sig.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
    assert len(logs) == 4
    for log in logs:  # replayed as TF-Serving does at load time
        request = log.predict_log.request
        assert request.model_spec.name == "toy"
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        assert all(np.all((v >= 0) & (v <= 1)) for v in inputs.values())
        loaded.signatures[request.model_spec.signature_name](**inputs)

    models = toy_export["models"]
    config = text_format.Parse(open(os.path.join(models, sig.MODEL_CONFIG_FILE)).read(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "toy" and os.path.isabs(entry.base_path)
    assert list_versions(entry.base_path) == [1]
    container = text_format.Parse(open(os.path.join(models, "models.container.config")).read(),
                                  model_server_config_pb2.ModelServerConfig())
    assert container.model_config_list.config[0].base_path == "/models/toy"
    batching = open(os.path.join(models, sig.BATCHING_CONFIG_FILE)).read()
    assert "max_batch_size { value: 256 }" in batching


def test_versions_increment_never_overwrite_and_leave_no_temp_dirs(toy_export, tmp_path):
    models = str(tmp_path / "MODELS")
    config = dict(run=toy_export["run"], model_base=models, name="v", warmup_requests=1)
    assert export_run(ExportConfig(**config)).endswith(os.path.join("v", "1"))
    assert export_run(ExportConfig(**config, version=5)).endswith(os.path.join("v", "5"))
    assert export_run(ExportConfig(**config)).endswith(os.path.join("v", "6"))
    with pytest.raises(ConfigError, match="version 5 is invalid; .* exists and versions are never overwritten"):
        export_run(ExportConfig(**config, version=5))
    assert sorted(os.listdir(os.path.join(models, "v"))) == ["1", "5", "6"]


def xla_flags(version_dir):
    """The ``_XlaMustCompile`` attribute of every serving function in saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as handle:
        saved = saved_model_pb2.SavedModel.FromString(handle.read())
    functions = saved.meta_graphs[0].graph_def.library.function
    return {f.attr["_XlaMustCompile"].b for f in functions if f.signature.name.startswith("__inference_serve_")}


def test_xla_export_is_recorded_and_agrees(toy_export, tmp_path):
    path = export_run(ExportConfig(run=toy_export["run"], model_base=str(tmp_path), name="x", xla=True,
                                   warmup_requests=0))
    with open(os.path.join(path, "assets", sig.UFL_ASSET)) as handle:
        info = json.load(handle)
    assert info["xla"] is True and info["jit_compile"] is True
    assert xla_flags(path) == {True} and xla_flags(toy_export["path"]) == {False}
    raw = tf.constant(toy_export["raw"][:16])
    xla_codes = tf.saved_model.load(path).signatures[sig.SERVING_DEFAULT](patches=raw)["codes"]
    plain = tf.saved_model.load(toy_export["path"]).signatures[sig.SERVING_DEFAULT](patches=raw)["codes"]
    np.testing.assert_allclose(xla_codes.numpy(), plain.numpy(), atol=1e-4)


def test_whole_image_samples_give_codes_as_image_features(tmp_path, digits):
    images = digits[0][:300]
    _, run_dir = make_run(str(tmp_path), {"kind": "export_toy", "n_codes": 6}, images.reshape(300, -1),
                          patch_size=8, steps=("mean",), extra_metadata={"extract": "full"})
    path = export_run(ExportConfig(run=run_dir, model_base=str(tmp_path / "M"), name="w", warmup_requests=0))
    loaded = tf.saved_model.load(path)
    features = loaded.signatures[sig.ENCODE_IMAGES](images=tf.constant(images[:5]))["features"]
    codes = loaded.signatures[sig.SERVING_DEFAULT](patches=tf.constant(images[:5].reshape(5, -1)))["codes"]
    np.testing.assert_allclose(features.numpy(), codes.numpy(), atol=1e-6)


def test_bad_input_is_reported(toy_export, tmp_path, digits):
    _, run_dir = make_run(str(tmp_path), {"kind": "export_toy"}, random_patches(digits[0], 4, 100),
                          patch_size=4, checkpoint=False)
    with pytest.raises(ConfigError, match="has no checkpoint under checkpoints/"):
        export_run(ExportConfig(run=run_dir, model_base=str(tmp_path / "M"), name="n"))
    with pytest.raises(ConfigError, match="run .* is invalid; no such directory"):
        export_run(ExportConfig(run=str(tmp_path / "nope"), model_base=str(tmp_path / "M"), name="n"))
    with pytest.raises(ConfigError, match="name 'my model' is invalid; use letters, digits"):
        ExportConfig(run=run_dir, model_base=str(tmp_path / "M"), name="my model")
    assert not list_versions(str(tmp_path / "M" / "n"))


def test_cli_export(toy_export, tmp_path, capsys):
    from ufl.cli import main

    models = str(tmp_path / "M")
    assert main(["export", toy_export["run"], "--model-base", models, "--name", "cli", "--warmup-requests",
                 "1"]) == 0
    assert "models.config" in capsys.readouterr().out and list_versions(os.path.join(models, "cli")) == [1]
    assert main(["export", toy_export["run"], "--model-base", models, "--name", "cli", "--version", "1"]) == 2
    assert "never overwritten" in capsys.readouterr().err


def kind_specs():
    """``(kind, model spec, sample side, normalization steps)`` of every registered model kind, from the
    first preset using it (the preset's data recipe gives the sample size and normalization)."""
    from ufl.trainers.presets import all_presets
    from ufl.trainers.registry import model_kinds

    presets = list(all_presets().values())
    specs = []
    for kind in model_kinds():
        if kind.startswith("export_"):  # this folder's own test model
            continue
        preset = next((p for p in presets if p.model.get("kind") == kind), None)
        spec = dict(preset.model) if preset else {"kind": kind}
        data = preset.data if preset else {}
        side = data.get("patch_size") or 28  # whole-image presets use 28x28 MNIST-style images
        normalize = data.get("normalize", "none")
        steps = () if normalize in ("none", None) else tuple(normalize.split(","))
        specs.append(pytest.param(kind, spec, side, steps, data.get("extract", "random"), id=kind))
    return specs


@pytest.mark.slow
@pytest.mark.parametrize("kind,spec,side,steps,extract", kind_specs())
def test_every_model_kind_exports_and_serves_its_in_process_codes(kind, spec, side, steps, extract, tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.random((80, side * side), dtype=np.float32)
    _, run_dir = make_run(str(tmp_path), spec, raw, patch_size=side, steps=steps, source="builtin:mnist10k",
                          extra_metadata={"extract": extract})
    path = export_run(ExportConfig(run=run_dir, model_base=str(tmp_path / "M"), name=kind.replace("_", "-"),
                                   warmup_requests=1))
    trained = load_trained_model(run_dir)
    stats = {k: v.astype(np.float32) for k, v in trained.stats.items()}
    normalized = apply_normalization(raw[:16], steps, stats).astype(np.float32)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures[sig.SERVING_DEFAULT](patches=tf.constant(raw[:16]))[sig.CODES_OUTPUT].numpy()
    np.testing.assert_allclose(served, trained.model.encode(tf.constant(normalized)).numpy(), atol=1e-4, rtol=1e-4)
    if sig.RECONSTRUCT in loaded.signatures and not steps:
        out = loaded.signatures[sig.RECONSTRUCT](patches=tf.constant(raw[:16]))[sig.RECONSTRUCTION_OUTPUT]
        np.testing.assert_allclose(out.numpy(), trained.model.reconstruct(tf.constant(normalized)).numpy(),
                                   atol=1e-4, rtol=1e-4)
    images = raw[:4].reshape(4, side, side, 1)
    features = loaded.signatures[sig.ENCODE_IMAGES](images=tf.constant(images))[sig.FEATURES_OUTPUT]
    assert features.shape[0] == 4 and np.all(np.isfinite(features.numpy()))


TRAIN_OVERRIDES = {
    "sparse-coding": [],
    # contrast+ZCA patches are not in [0, 1]: a linear decoder with squared error fits them
    "dense-ae": ["--set", "model.hidden_units=[24]", "--set", "model.output_activation=linear",
                 "--set", "model.loss=mse", "--set", 'optimizer={"name": "adam", "learning_rate": 0.003}'],
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(TRAIN_OVERRIDES))
def test_ufl_train_then_export_serves_the_trained_model(preset, tmp_path, digits):
    from ufl.cli import main
    from ufl.pipeline.normalize import fit_statistics
    from ufl.pipeline.tfrecord import write_data_dir
    from ufl.trainers.presets import preset_names

    if preset not in preset_names():
        pytest.skip(f"preset {preset} is not in the tree yet")
    raw = random_patches(digits[0], 6, 3000)
    stats = {k: np.asarray(v, np.float32) for k, v in
             fit_statistics(raw, ("contrast", "zca"), zca_epsilon=0.01).items()}
    normalized = apply_normalization(raw.astype(np.float64), ("contrast", "zca"), stats).astype(np.float32)
    data = str(tmp_path / "DATA")
    write_data_dir(data, {"train": normalized[:2700], "eval": normalized[2700:]}, patch_size=(6, 6), channels=1,
                   normalization={"steps": ["contrast", "zca"]}, stats=stats, source="builtin:digits")
    run = str(tmp_path / "RUN")
    assert main(["train", preset, "--data", data, "--out", run, "--epochs", "1", "--batch-size", "100",
                 "--set", "max_steps=20", "--set", "steps_per_execution=10", *TRAIN_OVERRIDES[preset]]) == 0
    models = str(tmp_path / "MODELS")
    assert main(["export", run, "--model-base", models, "--name", preset]) == 0
    trained = load_trained_model(run)
    loaded = tf.saved_model.load(os.path.join(models, preset, "1"))
    served = loaded.signatures[sig.SERVING_DEFAULT](patches=tf.constant(raw[:64]))[sig.CODES_OUTPUT].numpy()
    np.testing.assert_allclose(served, trained.model.encode(tf.constant(normalized[:64])).numpy(),
                               atol=1e-4, rtol=1e-3)
    with open(os.path.join(models, preset, "1", "assets", sig.UFL_ASSET)) as handle:
        info = json.load(handle)
    assert info["preset"] == preset and info["warmup_data"] == "source builtin:digits"
