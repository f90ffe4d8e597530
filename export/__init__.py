"""ufl.export: trained runs as TF-Serving SavedModels, and their reuse as features.

- ``export_run(ExportConfig)``: RUN/ -> MODELS/NAME/VERSION/ (``ufl export``).
- ``load_encoder(path)``: an exported model's ``encode_images`` (or another signature) as a tf_keras layer.
- ``compute_features`` / ``ComputeFeatures``: features of an image source in process, from a server, or in
  a Beam pipeline (``ufl features``).
- ``linear_probe``: logistic regression on encoder features vs raw pixels (``ufl evaluate linear-probe``).

Imports are lazy so that ``import ufl.export`` (e.g. for the signature constants) does not load TensorFlow.
"""
import importlib

_PUBLIC = {
    "export_run": "ufl.export.saved_model",
    "list_versions": "ufl.export.versions",
    "ServingModule": "ufl.export.serving_module",
    "load_encoder": "ufl.export.load",
    "resolve_version_dir": "ufl.export.load",
    "compute_features": "ufl.export.features",
    "ComputeFeatures": "ufl.export.features",
    "linear_probe": "ufl.export.evaluate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ufl.export' has no attribute {name!r}")
