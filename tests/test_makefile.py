"""The Makefile's commands work from a clone under a folder with a space ("My Projects/ufl")."""
import os
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_make_test_gives_the_shared_data_folder_to_pytest_from_a_path_with_a_space(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clone = tmp_path / "My Projects" / "ufl"
    clone.mkdir(parents=True)
    for name in ("Makefile", "setup.py"):
        shutil.copy(os.path.join(REPO, name), clone / name)
    data = tmp_path / "My Projects" / "shared" / "data"
    data.mkdir(parents=True)
    printed = subprocess.run(["make", "-n", "test"], cwd=clone, capture_output=True, text=True, check=True).stdout
    (command,) = [line for line in printed.splitlines() if "-m pytest" in line]
    # the same command line through the shell, with pytest swapped for a print of what it would see
    probe = f"{shlex.quote(sys.executable)} -c 'import os; print(os.environ[\"UFL_DATASETS\"])'"
    command = command.replace(command[command.index(".venv/bin/python"):], probe)
    shown = subprocess.run(["sh", "-c", command], cwd=clone, capture_output=True, text=True, check=True).stdout
    assert shown.strip() == str(data)
