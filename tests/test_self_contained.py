"""The project stands on its own: no tracked file of the product names a path outside the repository."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Strings that point outside a clone: the shared folder some machines keep beside it.
OUTSIDE = ("../shared", "/shared/data")
#: Tests, the Makefile and CI may look beside the clone for optional data (they skip without it).
ALLOWED = ("tests/", "Makefile", ".ci/")


def tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files failed)")
    return [name for name in listed.stdout.decode().split("\0") if name]


def names_outside(name):
    path = os.path.join(REPO, name)
    if not os.path.isfile(path):  # deleted in the work tree
        return []
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    return [f"{name}:{number}: {line.strip()}" for number, line in enumerate(text.splitlines(), 1)
            if any(outside in line for outside in OUTSIDE)]


def test_no_product_file_names_a_path_outside_the_repository():
    files = [name for name in tracked_files() if not name.startswith(ALLOWED)]
    offending = [hit for name in files for hit in names_outside(name)]
    assert not offending, "files naming a path outside the repository:\n" + "\n".join(offending)

