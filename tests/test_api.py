"""The public API a user imports: each name in ``__all__``, each docstring example run as written.

The examples build on each other as a user's session would: ``preprocess`` writes work/digits-data,
``read_patches`` reads it, ``ufl train`` (a few steps) makes work/digits-run, ``export_run`` exports it and
``load_encoder`` reuses the export.
"""
import doctest

import pytest

import ufl.export
import ufl.pipeline
from ufl.cli import main

API = (("ufl.pipeline", "preprocess"), ("ufl.pipeline", "read_patches"), ("ufl.export", "export_run"),
       ("ufl.export", "load_encoder"))


@pytest.mark.parametrize("module, name", API)
def test_public_names_are_listed_and_documented_with_an_example(module, name):
    package = {"ufl.pipeline": ufl.pipeline, "ufl.export": ufl.export}[module]
    assert name in package.__all__
    assert ">>> " in getattr(package, name).__doc__


def run_examples(function) -> None:
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    (test,) = finder.find(function, function.__name__, globs={function.__name__: function})
    assert test.examples, f"{function.__name__} has no example"
    runner.run(test)
    assert runner.failures == 0, f"the example of {function.__name__} failed (see the output above)"


@pytest.mark.slow
def test_docstring_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_examples(ufl.pipeline.preprocess)
    run_examples(ufl.pipeline.read_patches)
    assert main(["train", "sparse-coding", "--data", "work/digits-data", "--out", "work/digits-run",
                 "--set", "model.n_atoms=16", "--set", "max_steps=3", "--epochs", "1"]) == 0
    run_examples(ufl.export.export_run)
    run_examples(ufl.export.load_encoder)
