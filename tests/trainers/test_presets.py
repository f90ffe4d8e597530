"""Every preset builds its model without changing the preset, and lists as JSON."""
import json

import pytest

from ufl.trainers.presets import all_presets
from ufl.trainers.registry import build_model

#: A sample shape each preset's model accepts (whole 28x28 digits for the image models, patches otherwise).
SAMPLE_SHAPES = {"sparse-coding": (12, 12, 1), "sparse-coding-demo": (16, 16, 1), "foldiak": (10, 10, 1)}


@pytest.mark.parametrize("name", sorted(all_presets()))
def test_building_a_preset_model_leaves_the_preset_unchanged(name):
    preset = all_presets()[name]
    before = json.dumps(preset.model, sort_keys=True)
    build_model(preset.model, SAMPLE_SHAPES.get(name, (28, 28, 1)))
    assert json.dumps(preset.model, sort_keys=True) == before
