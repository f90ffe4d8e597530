"""Test-session setup: split the CPU into 2 logical devices so MirroredStrategy runs for real."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture
def two_cpu_devices():
    """Names of the two logical CPU devices (for MirroredStrategy(devices=...))."""
    return [device.name for device in tf.config.list_logical_devices("CPU")][:2]


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session, made as ``ufl train`` makes it.

    Separate MirroredStrategy objects with collective all-reduce over the same devices reuse collective
    instance keys and abort each other; ``choose_strategy`` reduces through one device on CPUs instead.
    """
    from ufl.trainers.strategy import choose_strategy

    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    return choose_strategy("mirrored", devices=devices)


@pytest.fixture
def shared_datasets(monkeypatch):
    """``UFL_DATASETS`` pointed at the shared data folder (the full MNIST and Fashion-MNIST); skips without it."""
    if not (os.path.isfile(os.path.join(SHARED_DATA, "mnist.npz"))
            and os.path.isdir(os.path.join(SHARED_DATA, "fashion-mnist"))):
        pytest.skip(f"the full MNIST and Fashion-MNIST are not in {SHARED_DATA} (set up beside the repository)")
    monkeypatch.setenv("UFL_DATASETS", SHARED_DATA)
    return SHARED_DATA
