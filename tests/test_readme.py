"""README.md as a recipe: every command and Python snippet runs, in order, in one working folder.

Each fenced ``bash`` block is split into commands (``\\`` continuations joined, ``#`` comments dropped) and
each ``python`` block is executed as it is. Inputs a step names must have been made by an earlier step.
To keep the test small, sizes are substituted, never commands: ``--epochs 1``, a few training steps, few
patches per image, 300 images instead of MNIST/Fashion-MNIST, free ports instead of 8500/8501, Beam's
in-process runner. ``ufl`` commands run through ``ufl.cli.main`` in this process (what the ``ufl`` script
calls); ``ufl serve`` runs in the background until the next ``ufl serve`` or the end; other commands run
in bash. What cannot run on this machine is listed in NOT_RUN with the reason.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
README = os.path.join(REPO_ROOT, "README.md")

#: Commands this machine cannot run, with the reason (the pattern is searched in the command).
NOT_RUN = [
    (r"^make test\b", "the test suite itself"),
    (r"^pip install\b", "installs packages"),
    (r"\bdask (scheduler|worker)\b|DaskRunner", "needs a Dask cluster (tests/pipeline/test_preprocess_dask.py)"),
    (r"FlinkRunner|SparkRunner|DataflowRunner", "needs a Flink, Spark or Google Cloud cluster"),
    (r"^docker\b", "needs Docker"),
    (r"tensorflow_model_server|--backend tfserving", "TensorFlow Serving's binary is not installed here"),
    (r"--source[ =]'?tfds:", "TensorFlow Datasets downloads its data (offline here)"),
    (r"--source[ =]'?images:photos/", "the user's own photos"),
    (r"--source[ =]'?mat:patches\.mat", "the user's own patches.mat"),
    (r"\.\.\.|\[options\]|\bSPEC\b", "a synopsis, not a command"),
]
#: `make run` installs ufl (these tests run in that install) and then runs this.
MAKE_TARGETS = {"make run": "ufl run --workdir work"}


def readme_blocks(text: str):
    """``(line number, language, code)`` of every fenced block."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        yield text[:match.start()].count("\n") + 1, match.group(1), match.group(2)


def block_commands(code: str):
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    for line in re.sub(r"\s*\\\n\s*", " ", code).splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()
        if line:
            yield line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_npz(path: str, source: str, count: int = 600) -> str:
    """``count`` images of ``source`` (a seeded random choice: the files may be sorted by label), as
    ``images``/``labels`` and in Keras' layout (``x_train``... the last sixth as the test split)."""
    arrays = np.load(source)
    rows = np.sort(np.random.default_rng(0).choice(len(arrays["labels"]), size=count, replace=False))
    images, labels = arrays["images"][rows], arrays["labels"][rows]
    train = count - count // 6
    np.savez(path, images=images, labels=labels, x_train=images[:train], y_train=labels[:train],
             x_test=images[train:], y_test=labels[train:])
    return path


class Recipe:
    """Runs README commands at tiny sizes in ``workdir``; records what ran and what was not run."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.ports = {"8500": str(free_port()), "8501": str(free_port())}
        bundled = os.path.join(REPO_ROOT, "ufl", "data", "mnist10k.npz")
        mnist = small_npz(os.path.join(workdir, "mnist-small.npz"), bundled)
        # Fashion-MNIST from the shared data folder when it sits beside the clone; else the bundled digits
        # stand in (same 28x28 layout: the commands, not the pictures, are under test here)
        shared_fashion = os.path.join(SHARED_DATA, "fashion_mnist.npz")
        fashion = small_npz(os.path.join(workdir, "fashion-small.npz"),
                            shared_fashion if os.path.isfile(shared_fashion) else bundled)
        self.sources = [(r"npz:\S*fashion_mnist\.npz|builtin:fashion-mnist\b", f"npz:{fashion}"),
                        (r"builtin:mnist(10k)?(?![\w-])", f"npz:{mnist}")]
        self.servers = []
        self.ran, self.not_run = [], []

    def substitute(self, text: str) -> str:
        """Ports and data sizes; the commands stay the README's."""
        for port, free in self.ports.items():
            text = re.sub(rf"\b{port}\b", free, text)
        for pattern, replacement in self.sources:
            text = re.sub(pattern, replacement, text)
        return text

    def tiny(self, argv: list) -> list:
        """Epochs, steps, patches and images of a ``ufl`` command made small."""
        verb = argv[0]
        argv = ["1" if previous == "--epochs" else arg for previous, arg in zip([""] + argv, argv)]
        argv = [str(min(int(arg), 100)) if previous == "--patches-per-image" else arg
                for previous, arg in zip([""] + argv, argv)]
        if verb == "preprocess":
            if not any(arg.startswith(("--runner", "--direct_running_mode")) for arg in argv):
                argv += ["--direct_running_mode=in_memory"]
        if verb == "train" and "--list-presets" not in argv:
            argv += ["--set", "max_steps=3"] + ([] if "--epochs" in argv else ["--epochs", "1"])
        if verb == "run" and "--epochs" not in argv:
            argv += ["--epochs", "1"]
        if verb == "evaluate" and argv[1:2] == ["linear-probe"]:
            argv = [str(min(int(arg), 200)) if previous == "--max-images" else arg
                    for previous, arg in zip([""] + argv, argv)]
            argv += [] if "--max-images" in argv else ["--max-images", "200"]
        if verb == "evaluate" and argv[1:2] == ["cnn-branch"]:
            argv += ["--set", "max_steps=3"] + ([] if "--epochs" in argv else ["--epochs", "1"])
        return argv

    def run_command(self, line: str, where: str) -> None:
        for pattern, reason in NOT_RUN:
            if re.search(pattern, line):
                self.not_run.append((where, line, reason))
                return
        line = MAKE_TARGETS.get(line, line)
        line = self.substitute(line)
        if line == "kill %1":
            self.stop_servers()
            return
        started = time.monotonic()
        words = shlex.split(line)
        if words[-1] == "&":  # a server in the background: every 'ufl serve' runs so here
            words = words[:-1]
        if words[0] != "ufl":
            self.shell(line, where)
        elif words[1] == "serve":
            self.serve(words[1:], where)
        else:
            self.ufl(self.tiny(words[1:]), where)
        self.ran.append((where, line, time.monotonic() - started))

    def ufl(self, argv: list, where: str) -> None:
        from ufl.cli import main

        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = main(argv)
        assert code == 0, f"{where}: ufl {shlex.join(argv)} exited {code}:\n{output.getvalue()[-3000:]}"

    def shell(self, line: str, where: str) -> None:
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        result = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], cwd=self.workdir, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{where}: {line} exited {result.returncode}:\n{result.stderr[-3000:]}"
        assert '"error"' not in result.stdout, f"{where}: {line} answered an error: {result.stdout[:1000]}"

    def serve(self, argv: list, where: str) -> None:
        """Starts ``ufl serve`` in the background (stopping the previous one) and waits until it serves."""
        self.stop_servers()
        if not any(arg.startswith("--port") for arg in argv):
            argv += ["--port", self.ports["8500"]]
        if not any(arg.startswith("--rest_api_port") for arg in argv):
            argv += ["--rest_api_port", self.ports["8501"]]
        server = subprocess.Popen([sys.executable, "-m", "ufl.cli", *argv], cwd=self.workdir,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.servers.append(server)
        ready, lines = threading.Event(), []

        def read():
            for output_line in server.stdout:
                lines.append(output_line)
                if "gRPC API on" in output_line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 180
        while not ready.is_set() and server.poll() is None and time.monotonic() < deadline:
            ready.wait(0.5)
        assert ready.is_set(), f"{where}: ufl {shlex.join(argv)} did not start:\n{''.join(lines)[-3000:]}"

    def stop_servers(self) -> None:
        while self.servers:
            server = self.servers.pop()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    def run_python(self, code: str, where: str) -> None:
        started = time.monotonic()
        try:
            exec(compile(self.substitute(code), where, "exec"), {"__name__": "__readme__"})
        except Exception as error:
            raise AssertionError(f"{where}: the Python snippet failed: {type(error).__name__}: {error}") from error
        self.ran.append((where, "python snippet", time.monotonic() - started))


def test_readme_blocks_are_found_and_classified():
    """The harness sees the README's blocks and what it will not run names its reason."""
    with open(README, encoding="utf-8") as handle:
        blocks = list(readme_blocks(handle.read()))
    languages = {language for _, language, _ in blocks}
    assert {"bash", "python"} <= languages
    commands = [line for _, language, code in blocks if language == "bash" for line in block_commands(code)]
    assert "make run" in commands
    assert all(not line.startswith("#") for line in commands)
    assert list(block_commands("ufl a \\\n   --b 1   # comment\n\n# only a comment\nufl c")) == ["ufl a --b 1",
                                                                                            "ufl c"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 minutes on 2 idle cores; far longer when other jobs share them
def test_every_readme_command_and_snippet_runs(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    monkeypatch.chdir(workdir)
    recipe = Recipe(workdir)
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    failures = []
    try:
        for line_number, language, code in readme_blocks(text):
            where = f"README.md:{line_number}"
            if not language and all(line.startswith("ufl ") for line in block_commands(code)):
                language = "bash"  # an untagged block of ufl commands is a recipe too
            steps = ([(line, recipe.run_command) for line in block_commands(code)] if language == "bash" else
                     [(code, recipe.run_python)] if language == "python" else [])
            for step, run in steps:
                try:
                    run(step, where)
                except AssertionError as error:  # go on: one report of every step that fails
                    failures.append(str(error).split("\nassert")[0])
    finally:
        recipe.stop_servers()
    print("\n".join(f"not run: {where}: {line}  ({reason})" for where, line, reason in recipe.not_run))
    print("slowest:\n" + "\n".join(f"{seconds:6.1f} s  {where}: {line[:100]}"
                                    for where, line, seconds in sorted(recipe.ran, key=lambda item: -item[2])[:12]))
    assert not failures, "\n\n".join(failures)
    assert len(recipe.ran) > 20
