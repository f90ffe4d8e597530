"""Packaging for ufl: unsupervised feature learning with TensorFlow 2, Apache Beam and TF-Serving.

The repository keeps one top-level folder per stage; ``package_dir`` maps them into the ``ufl`` package
so that ``import ufl.pipeline`` works from an install, from ``pip install -e .`` and from pytest at the
repository root.
"""
from setuptools import setup

PACKAGE_DIR = {
    "ufl": "ufl",
    "ufl.pipeline": "pipeline",
    "ufl.trainers": "trainers",
    "ufl.export": "export",
}

setup(
    name="ufl",
    version="0.1.0",
    description="Unsupervised feature learning: Beam preprocessing, sparse coding and autoencoders "
    "in TensorFlow 2, exported to TensorFlow Serving.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=list(PACKAGE_DIR) + ["ufl.config", "ufl.commands"],
    package_dir=PACKAGE_DIR,
    package_data={"ufl": ["data/*.npz"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<4.10",
        "apache-beam[tfrecord]>=2.77,<2.78",
        "google-crc32c>=1.5",
        "tensorflow-serving-api>=2.21,<2.22",
        "grpcio>=1.60",
        # The standard grpc.health.v1 service; its 1.81+ releases need protobuf 7, which apache-beam 2.77 refuses.
        "grpcio-health-checking>=1.80,<1.81",
        "prometheus_client>=0.20",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "scikit-image>=0.22",
        "scikit-learn>=1.4",
        "pillow>=10",
        "pooch>=1.6",
        # tensorflow-datasets prepares datasets with it but does not declare it.
        "importlib_resources>=6",
        "threadpoolctl>=3",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.2", "dask[distributed]>=2024.1"],
        "bench": ["spams-bin>=2.6", "torch==2.13.0", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["ufl=ufl.cli:main"]},
)
