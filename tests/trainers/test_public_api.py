"""What a user imports from ufl.trainers: every public name is listed, importable and has an example that runs."""
import doctest
import tempfile

import pytest

import ufl.trainers

PUBLIC = ("SparseCoding", "DenseAutoencoder", "StackedAutoencoder", "ConvAutoencoder", "TiedConvAutoencoder",
          "FoldiakNetwork", "sparse_encode", "train")


def test_public_names_are_listed_and_importable():
    assert set(PUBLIC) <= set(ufl.trainers.__all__)
    namespace = {}
    exec(f"from ufl.trainers import {', '.join(PUBLIC)}", namespace)
    assert all(callable(namespace[name]) for name in PUBLIC)
    with pytest.raises(AttributeError, match="has no attribute 'SparseCodingg'"):
        ufl.trainers.SparseCodingg


@pytest.mark.parametrize("target", ["module", "FoldiakNetwork", "train"])
def test_docstring_examples_run(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' mkdtemp() folders go away with it
    obj = ufl.trainers if target == "module" else getattr(ufl.trainers, target)
    finder = doctest.DocTestFinder(recurse=False)
    tests = finder.find(obj, name=f"ufl.trainers.{'' if target == 'module' else target}", globs={})
    examples = sum(len(test.examples) for test in tests)
    assert examples >= 3
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} of {examples} examples failed (see the output above)"


def test_every_public_name_has_an_example():
    for name in PUBLIC:
        docstring = getattr(ufl.trainers, name).__doc__ or ""
        assert ">>> from ufl.trainers import" in docstring and name in docstring or \
            f"from ufl.trainers import {name}" in ufl.trainers.__doc__ or \
            f"``{name}``" in ufl.trainers.__doc__.split("Examples")[1].split("see their own")[0], name
