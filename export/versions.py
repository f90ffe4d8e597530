"""Version folders of a served model (MODELS/NAME/VERSION/), as TF-Serving numbers them.

Shared by the exporter (which numbers a new version highest + 1 and never reuses a number) and the server
(which loads only complete versions). Light on purpose: the server imports it without the trainers.
"""
from __future__ import annotations

import os
from typing import List

import tensorflow as tf


def list_versions(model_dir: str, *, complete_only: bool = False) -> List[int]:
    """Integer version folders of ``model_dir`` (MODELS/NAME), ascending.

    Args:
      model_dir: the model's base path.
      complete_only: keep only versions holding a ``saved_model.pb`` (what a server may load); otherwise
        every integer folder counts (what a new version number must not collide with).
    """
    if not tf.io.gfile.isdir(model_dir):
        return []
    versions = []
    for entry in tf.io.gfile.listdir(model_dir):
        entry = entry.rstrip("/")
        if not entry.isdigit():
            continue
        path = os.path.join(model_dir, entry)
        if tf.io.gfile.isdir(path) and (not complete_only or tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))):
            versions.append(int(entry))
    return sorted(versions)
