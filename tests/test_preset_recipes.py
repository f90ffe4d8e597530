"""Every recipe ``ufl train --list-presets`` prints runs as printed: its ``ufl preprocess`` line, then
``ufl train PRESET`` on what it made, at tiny sizes (the README harness's substitutions: a 600-image MNIST or
Fashion-MNIST file, few patches per image, one epoch of 3 steps; the commands stay the listing's)."""
import os

import pytest

from test_readme import NOT_RUN, Recipe
from ufl.commands.train import describe_presets
from ufl.trainers import presets


def listed_recipes():
    """``(preset name, its 'ufl preprocess' line)`` as ``--list-presets`` prints them."""
    recipes, name = [], None
    for line in describe_presets().splitlines():
        if line and not line.startswith(" "):
            name = line.strip()
        elif line.strip().startswith("data:") and "ufl preprocess " in line:
            recipes.append((name, "ufl preprocess " + line.split("ufl preprocess ", 1)[1].strip()))
    return recipes


def test_every_shipped_preset_lists_a_recipe():
    names = {name for name, _ in listed_recipes()}
    shipped = set(presets.all_presets()) - set(presets._REGISTERED)
    assert shipped and shipped <= names


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name,command", listed_recipes())
def test_listed_recipe_preprocesses_and_trains(name, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if any(__import__("re").search(pattern, command) for pattern, _ in NOT_RUN):
        pytest.skip(f"{command} cannot run here")
    recipe = Recipe(str(tmp_path))
    recipe.run_command(command.replace(" DATA", " data"), f"{name} recipe")
    recipe.run_command(f"ufl train {name} --data data --out run", f"{name} train")
    assert os.path.exists(tmp_path / "run" / "metrics.json")
