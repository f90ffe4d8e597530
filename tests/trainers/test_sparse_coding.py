"""The SparseCoding layer and the sparse_coding model: config round trips, learning, distribution, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from scipy.optimize import linear_sum_assignment

from ufl.config.base import ConfigError
from ufl.pipeline.normalize import apply_normalization, fit_statistics
from ufl.trainers.presets import get_preset
from ufl.trainers.registry import build_model
from ufl.trainers.sparse_coding import PRESETS, SparseCoding, SparseCodingModel


def planted_dictionary_data(n_patches, *, n_atoms=64, dim=64, nonzeros=3, noise=0.01, seed=0):
    """Patches from a known random unit-norm dictionary: ``nonzeros`` atoms per patch with coefficients of
    magnitude 0.5-1.5 and random signs, plus Gaussian noise. Returns ``(patches, dictionary)``."""
    rng = np.random.default_rng(seed)
    dictionary = rng.standard_normal((n_atoms, dim))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n_patches, n_atoms))
    rows = np.repeat(np.arange(n_patches), nonzeros)
    columns = np.argsort(rng.random((n_patches, n_atoms)), axis=1)[:, :nonzeros].ravel()
    codes[rows, columns] = rng.choice([-1.0, 1.0], rows.size) * rng.uniform(0.5, 1.5, rows.size)
    patches = codes @ dictionary + noise * rng.standard_normal((n_patches, dim))
    return patches.astype(np.float32), dictionary.astype(np.float32)


def recovered_fraction(true_dictionary, learned, threshold=0.99):
    """Fraction of true atoms matched (Hungarian matching on |cos|) by a learned atom with |cos| > threshold."""
    learned = learned / np.maximum(np.linalg.norm(learned, axis=1, keepdims=True), 1e-12)
    cosines = np.abs(true_dictionary @ learned.T)
    rows, columns = linear_sum_assignment(-cosines)
    return float(np.mean(cosines[rows, columns] > threshold))


def fit(model, patches, *, epochs, batch_size, jit_compile=False):
    """Drives ``model.train_step`` over ``patches`` like the loop does (compiled step, fixed-size batches)."""
    step = tf.function(model.train_step, jit_compile=jit_compile)
    metrics = None
    for _ in range(epochs):
        for start in range(0, len(patches) - batch_size + 1, batch_size):
            metrics = step({"patch": patches[start:start + batch_size]})
    return {key: float(value) for key, value in metrics.items()}


def make_model(sample_shape=(8, 8, 1), optimizer="adam", **spec):
    model = build_model({"kind": "sparse_coding", **spec}, sample_shape)
    model(tf.zeros([1, model.patch_dim]))
    if model.uses_optimizer:
        model.compile(optimizer=tf_keras.optimizers.get({"class_name": optimizer,
                                                         "config": {"learning_rate": 0.01}}))
    return model


def test_layer_config_round_trip_shapes_and_saved_model(tmp_path):
    layer = SparseCoding(12, sparsity_weight=0.2, inference="ista", max_inference_steps=40, tolerance=1e-5,
                         truncate_gradient=3, non_negative=True, unit_norm_atoms=True,
                         dictionary_regularizer=tf_keras.regularizers.L2(5e-5), name="coder")
    patches = np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32)
    codes = layer(patches)
    assert codes.shape == (5, 12) and float(tf.reduce_min(codes)) >= 0
    assert len(layer.losses) == 1
    clone = SparseCoding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(patches)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(patches).numpy(), codes.numpy(), atol=1e-6)
    reconstructing = SparseCoding.from_config({**layer.get_config(), "return_reconstruction": True})
    reconstructing(patches)
    reconstructing.set_weights(layer.get_weights())
    np.testing.assert_allclose(reconstructing(patches).numpy(), codes.numpy() @ layer.get_weights()[0],
                               atol=1e-5)
    model = tf_keras.Sequential([tf_keras.Input((20,)), layer])
    tf.saved_model.save(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.signatures["serving_default"](tf.constant(patches))["coder"].numpy(),
                               codes.numpy(), atol=1e-5)


def test_model_config_round_trips_through_build_model():
    model = make_model(n_atoms=10, inference="rmsprop", n_inference_steps=7, dictionary_update="gradient",
                       dictionary_init="initializer", truncate_gradient=2,
                       dictionary_regularizer={"class_name": "L2", "config": {"l2": 5e-5}})
    config = model.get_config()
    spec = {key: value for key, value in config.items() if key not in ("sample_shape", "name")}
    clone = build_model({"kind": "sparse_coding", **spec}, config["sample_shape"])
    assert clone.get_config() == config
    assert model.uses_optimizer and not make_model(n_atoms=10).uses_optimizer
    assert model.filters().shape == (10, 8, 8, 1)
    encoder = model.encoder_model()
    patches = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(encoder(patches).numpy(), model.encode(patches).numpy(), atol=1e-6)


def test_online_learning_recovers_a_planted_dictionary():
    patches, true_dictionary = planted_dictionary_data(6000)
    # gamma 0.3 against coefficients of magnitude 0.5-1.5: strong enough that mixtures of atoms cost more
    # than the atoms themselves, weak enough to keep every true coefficient nonzero
    model = make_model(n_atoms=64, sparsity_weight=0.3, max_inference_steps=50, tolerance=1e-3)
    start = recovered_fraction(true_dictionary, model.dictionary.numpy())
    metrics = fit(model, patches, epochs=20, batch_size=256)
    assert recovered_fraction(true_dictionary, model.dictionary.numpy()) >= 0.95 > start
    assert metrics["nonzeros"] < 6  # 3 true nonzeros per patch


def test_data_initialization_gives_distinct_atoms_from_a_batch_smaller_than_the_dictionary():
    # 16 atoms from a batch of 6 patches: atoms j, j + 6 and j + 12 start from the same patch; they must
    # still differ (by about 1e-4 in cosine), or the gradient update, which moves equal atoms equally,
    # could never separate them
    patches = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)  # like whitened patches
    model = make_model(sample_shape=(4, 4, 1), n_atoms=16, dictionary_update="gradient", max_inference_steps=5)
    model.train_step({"patch": patches})
    atoms = model.dictionary.numpy()
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    cosines = np.abs(atoms @ atoms.T)[np.triu_indices(16, k=1)]
    assert cosines.max() < 0.99999


def test_duplicate_atoms_are_replaced_and_their_statistics_cleared():
    from ufl.trainers.dictionary_learning import replace_redundant_atoms

    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((4, 16)).astype(np.float32)
    atoms[3] = -atoms[1] * 0.5 + 0.001 * atoms[0]
    patches = rng.standard_normal((8, 16)).astype(np.float32)
    statistics = np.ones((4, 4), np.float32), np.ones((4, 16), np.float32)
    new_atoms, code_gram, code_patch = (t.numpy() for t in replace_redundant_atoms(atoms, *statistics, patches))
    np.testing.assert_array_equal(new_atoms[:3], atoms[:3])
    np.testing.assert_allclose(new_atoms[3], patches[3] / np.linalg.norm(patches[3]), rtol=1e-6)
    assert code_gram[3].sum() == code_gram[:, 3].sum() == code_patch[3].sum() == 0
    assert code_gram[:3, :3].min() == 1 and code_patch[:3].min() == 1


@pytest.mark.slow
def test_ufl_train_recovers_a_planted_dictionary(tmp_path):
    if not _module_exists("ufl.trainers.train_loop"):
        pytest.skip("the training loop (ufl.trainers.train_loop) is not there yet")
    from ufl.cli import main
    from ufl.pipeline.tfrecord import write_data_dir
    from ufl.trainers.run_dir import load_trained_model

    patches, true_dictionary = planted_dictionary_data(6000)
    write_data_dir(str(tmp_path / "data"), {"train": patches, "eval": patches[:512]}, patch_size=(8, 8),
                   channels=1)
    code = main(["train", "sparse-coding", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--epochs", "20", "--batch-size", "256", "--set", "model.n_atoms=64",
                 "--set", "model.sparsity_weight=0.3"])
    assert code == 0
    trained = load_trained_model(str(tmp_path / "run"))
    assert recovered_fraction(true_dictionary, trained.model.dictionary.numpy()) >= 0.95


def _module_exists(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def natural_patches(n, size=8, seed=0):
    """Random ``size`` x ``size`` patches of the grayscale photos that ship with scikit-image, in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray

    rng = np.random.default_rng(seed)
    photos = []
    for name in ("camera", "astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "moon"):
        image = getattr(skimage.data, name)().astype(np.float32) / 255.0
        photos.append(rgb2gray(image[..., :3]) if image.ndim == 3 else image)
    per_photo = -(-n // len(photos))
    patches = []
    for image in photos:
        rows = rng.integers(0, image.shape[0] - size + 1, per_photo)
        columns = rng.integers(0, image.shape[1] - size + 1, per_photo)
        offsets = np.arange(size)
        patches.append(image[rows[:, None, None] + offsets[None, :, None],
                             columns[:, None, None] + offsets[None, None, :]].reshape(per_photo, -1))
    return np.concatenate(patches)[rng.permutation(per_photo * len(photos))[:n]]


def energy_near_centroid(atoms, size, window):
    """Per atom: fraction of its energy (squared weights) within a ``window`` x ``window`` square centred
    on its energy centroid. Localized atoms (Gabor-like edges, blobs) score high; random atoms score about
    window²/size², whatever their centroid."""
    energy = atoms.reshape(-1, size, size) ** 2
    energy /= energy.sum(axis=(1, 2), keepdims=True)
    grid = np.arange(size)
    row_centre = np.rint((energy.sum(2) * grid).sum(1)).astype(int)
    column_centre = np.rint((energy.sum(1) * grid).sum(1)).astype(int)
    half = window // 2
    fractions = []
    for atom, row, column in zip(energy, row_centre, column_centre):
        row0 = np.clip(row - half, 0, size - window)
        column0 = np.clip(column - half, 0, size - window)
        fractions.append(atom[row0:row0 + window, column0:column0 + window].sum())
    return np.array(fractions)


def energy_in_top_pixels(atoms, count=2):
    """Per atom: fraction of its energy in its ``count`` strongest pixels (about 1 for pixel-like atoms)."""
    energy = np.sort(atoms.reshape(len(atoms), -1) ** 2, axis=1)[:, ::-1]
    return energy[:, :count].sum(1) / energy.sum(1)


def test_atoms_learned_on_natural_patches_are_localized_not_pixels():
    # Localization measure: energy within a 4x4 window around the atom's energy centroid (1/4 of the 8x8
    # patch). Random atoms spread energy evenly (≈ 0.25 plus a little from centring on their fluctuations),
    # so they fail; pixel-like atoms would pass it, hence the second measure: energy of the 2 strongest
    # pixels, ≈ 1 for pixel-like atoms, small for edges and blobs spread over several pixels.
    raw = natural_patches(12000)
    steps = ("contrast", "zca")
    patches = apply_normalization(raw, steps, fit_statistics(raw, steps, zca_epsilon=0.1)).astype(np.float32)
    # whitened 8x8 patches have norm ≈ 5 here; gamma 2 gives ≈ 2 nonzeros per patch
    model = make_model(n_atoms=64, sparsity_weight=2.0, max_inference_steps=50, tolerance=1e-3,
                       dictionary_init="initializer")
    fit(model, patches, epochs=2, batch_size=256)
    atoms = model.dictionary.numpy()
    random_atoms = np.random.default_rng(0).standard_normal(atoms.shape)
    learned, chance = energy_near_centroid(atoms, 8, 4), energy_near_centroid(random_atoms, 8, 4)
    assert np.median(learned) > 0.45 > 1.6 * np.median(chance)  # measured: ≈ 0.55 against ≈ 0.27
    assert np.median(energy_in_top_pixels(atoms)) < 0.5


def _run_steps(model_spec, patches, strategy, steps=3):
    with strategy.scope():
        model = make_model(**model_spec)
    step = tf.function(lambda batch: strategy.run(model.train_step, (batch,)))
    dataset = tf.data.Dataset.from_tensor_slices({"patch": patches}).batch(len(patches) // steps,
                                                                            drop_remainder=True)
    for batch in strategy.experimental_distribute_dataset(dataset):
        step(batch)
    return model.dictionary.numpy(), model


@pytest.mark.parametrize("spec", [
    {"n_atoms": 16, "max_inference_steps": 60, "tolerance": 0.0},
    # SGD: Adam's first steps are ≈ lr·sign(gradient), which turns rounding noise in tiny gradients into
    # ±lr differences; FISTA: backpropagating through RMSprop's 1/√accumulator amplifies rounding too
    {"n_atoms": 16, "dictionary_update": "gradient", "max_inference_steps": 30, "tolerance": 0.0,
     "truncate_gradient": -1, "optimizer": "sgd"},
], ids=["online", "gradient"])
def test_two_replicas_match_one_device_for_the_same_global_batch(spec, two_cpu_devices, mirrored_strategy):
    patches, _ = planted_dictionary_data(192, n_atoms=16, dim=64)
    one, _ = _run_steps(spec, patches, tf.distribute.OneDeviceStrategy(two_cpu_devices[0]))
    two, model = _run_steps(spec, patches, mirrored_strategy)
    replicas = model.dictionary.values
    np.testing.assert_allclose(replicas[0].numpy(), replicas[1].numpy(), atol=0)
    np.testing.assert_allclose(two, one, atol=1e-4)  # summation order differs across replicas
    assert np.abs(two - model.dictionary.values[0].numpy()).max() == 0


def test_xla_compiled_train_step_matches_graph_mode():
    patches, _ = planted_dictionary_data(512, n_atoms=16, dim=64)
    spec = {"n_atoms": 16, "max_inference_steps": 100, "tolerance": 0.0}  # same step count in both
    compiled, graph = make_model(**spec), make_model(**spec)
    xla_metrics = fit(compiled, patches, epochs=1, batch_size=128, jit_compile=True)
    graph_metrics = fit(graph, patches, epochs=1, batch_size=128)
    np.testing.assert_allclose(compiled.dictionary.numpy(), graph.dictionary.numpy(), atol=1e-3)
    assert xla_metrics["loss"] == pytest.approx(graph_metrics["loss"], rel=1e-4)


def test_gradient_update_with_the_original_rmsprop_inference_lowers_the_cost():
    patches, _ = planted_dictionary_data(1000, n_atoms=16, dim=64)
    model = make_model(n_atoms=16, inference="rmsprop", dictionary_update="gradient", truncate_gradient=1,
                       dictionary_init="initializer", unit_norm_atoms=False,
                       dictionary_regularizer={"class_name": "L2", "config": {"l2": 5e-5}})
    before = float(model.test_step({"patch": patches})["loss"])
    fit(model, patches, epochs=3, batch_size=100)
    assert float(model.test_step({"patch": patches})["loss"]) < 0.8 * before


def test_presets_build_and_document_their_sources():
    assert {preset.name for preset in PRESETS} == {"sparse-coding", "sparse-coding-demo"}
    for preset in PRESETS:
        assert get_preset(preset.name) is preset and preset.reference["source"]
        size = preset.data["patch_size"]
        model = build_model(preset.model, (size, size, 1))
        assert isinstance(model, SparseCodingModel)
    demo = get_preset("sparse-coding-demo")
    assert demo.model["inference"] == "rmsprop" and demo.model["n_atoms"] == 49
    assert (demo.train["optimizer"]["name"], demo.train["optimizer"]["learning_rate"]) == ("rmsprop", 0.1)


def test_wrong_patch_length_is_refused():
    model = make_model(n_atoms=8)
    with pytest.raises(ConfigError, match=r"patches have length 63 but this sparse_coding model was built "
                                          r"for 8x8x1 patches \(length 64\)"):
        model.train_step({"patch": tf.zeros([4, 63])})


def test_layer_refuses_patches_of_another_length():
    layer = SparseCoding(4)
    layer(tf.zeros([2, 10]))
    with pytest.raises(ValueError, match="patches have length 9 but the 4-atom dictionary"):
        layer.encode(tf.zeros([2, 9]))


@pytest.mark.parametrize("spec, message", [
    ({"dictionary_update": "adam"}, "dictionary_update 'adam' is invalid; use one of: online, gradient"),
    ({"dictionary_init": "zeros"}, "dictionary_init 'zeros' is invalid; use one of: data, initializer"),
    ({"unit_norm_atoms": False}, "online dictionary learning needs atoms in the unit ball"),
    ({"bcd_passes": 0}, "bcd_passes 0 is invalid"),
    ({"forgetting_rate": -1}, "forgetting_rate -1 is invalid; use a number >= 0"),
    ({"n_atom": 3}, "argument 'n_atom' is invalid"),
    ({"n_atoms": 0}, "n_atoms 0 is invalid; use a positive integer"),
    ({"sparsity_weight": -1.0}, "sparsity_weight -1.0 is invalid"),
    ({"inference": "lars"}, "inference 'lars' is invalid; use one of: fista, ista, rmsprop"),
    ({"n_inference_steps": 0}, "n_inference_steps 0 is invalid"),
    ({"max_inference_steps": 0}, "max_inference_steps 0 is invalid"),
    ({"tolerance": -1.0}, "tolerance -1.0 is invalid"),
    ({"truncate_gradient": -2}, "truncate_gradient -2 is invalid"),
])
def test_invalid_arguments_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_model({"kind": "sparse_coding", **spec}, (8, 8, 1))
