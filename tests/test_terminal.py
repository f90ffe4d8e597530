"""What a user sees: ufl's own lines; TensorFlow's C++ notices and Beam's worker logs only with --verbose;
one line (or the traceback with --verbose) for an unexpected failure."""
import errno
import logging
import os
import re
import subprocess
import sys

import pytest

import ufl.commands.export
from ufl import quiet
from ufl.cli import main
from ufl.errors import storage_failure

#: Lines of TensorFlow's C++ logging, absl, CUDA probing and Beam's workers (as they look unhidden).
NOISE = re.compile(r"absl::InitializeLog|^[IWEF]\d{4} |oneDNN|cuda|cuInit|apitools|unparseable args|"
                   r"semi_persistent_directory|Logging handler created|^(INFO|WARNING|ERROR):|Worker: severity",
                   re.IGNORECASE | re.MULTILINE)


def ufl_command(*args, **env):
    """Runs ``python -m ufl.cli ARGS`` as a user would (no TF_CPP_MIN_LOG_LEVEL of the test session)."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "ufl.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, env=environment)


@pytest.mark.slow
def test_preprocess_prints_ufl_lines_only_and_everything_with_verbose(tmp_path):
    args = ["preprocess", "--source", "builtin:digits", "--extract", "full", "--normalize", "none"]
    quiet_run = ufl_command(*args, "--out", str(tmp_path / "quiet"))  # 2 Beam worker processes
    assert quiet_run.returncode == 0, quiet_run.stdout[-3000:]
    assert NOISE.search(quiet_run.stdout) is None, quiet_run.stdout
    assert all(line.startswith("ufl preprocess: ") for line in quiet_run.stdout.splitlines()), quiet_run.stdout
    loud_run = ufl_command("--verbose", *args, "--out", str(tmp_path / "verbose"))
    assert loud_run.returncode == 0, loud_run.stdout[-3000:]
    assert "Logging handler created" in loud_run.stdout  # Beam's worker processes, unhidden


def test_an_unexpected_failure_ends_in_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    def fail(args):
        raise RuntimeError("checkpoint broke\nwith a second line")

    monkeypatch.setattr(ufl.commands.export, "run", fail)
    assert main(["export", "run", "--model-base", "models", "--name", "x"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "ufl export: error: RuntimeError: checkpoint broke",
        "ufl export: run with --verbose for the traceback"]
    assert main(["export", "run", "--model-base", "models", "--name", "x", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in fail" in err
    assert err.splitlines()[-1] == "ufl export: error: RuntimeError: checkpoint broke"


def test_failed_writes_are_recognized_also_when_tensorflow_or_beam_wrap_them():
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device", "/x/y.npy")) == (
        "no space left on device", "free space there", "/x/y.npy")
    beam = RuntimeError("OSError: [Errno 28] No space left on device [while running 'WriteShards']")
    assert storage_failure(beam) == ("no space left on device", "free space there", None)
    tensorflow = RuntimeError("{{function_node SaveV2}} /m/x/.tmp-1/variables/part-0; No space left on device "
                              "[Op:SaveV2]")
    assert storage_failure(tensorflow)[2] == "/m/x/.tmp-1/variables/part-0"
    try:
        try:
            raise PermissionError(errno.EACCES, "Permission denied", "/ro/f")
        except PermissionError as error:
            raise ValueError("writing failed") from error
    except ValueError as wrapped:
        assert storage_failure(wrapped) == ("permission denied", "make it writable", "/ro/f")
    assert storage_failure(ValueError("bad value")) is None
    assert storage_failure(FileNotFoundError(errno.ENOENT, "No such file", "/a")) is None


def record(name, level, msg, *args):
    return logging.LogRecord(name, level, "/site-packages/x.py", 1, msg, args, None)


def test_library_chatter_is_hidden_and_a_typed_option_beam_ignores_is_shown_once():
    keep = quiet.TerminalFilter()
    formatter = quiet.TerminalFormatter("preprocess")
    beam_own = record("apache_beam.options.pipeline_options", logging.WARNING, "Discarding unparseable args: %s",
                      ["--pipeline_type_check", "--direct_runner_use_stacked_bundle"])
    assert not keep.filter(beam_own)
    assert not keep.filter(record("apache_beam.runners.portability.local_job_service", logging.WARNING,
                                  "Worker: severity: WARN ..."))
    assert not keep.filter(record("absl", logging.WARNING, "Compiled the loaded model, but ..."))
    assert not keep.filter(record("root", logging.INFO, "chatter"))
    typed = record("apache_beam.options.pipeline_options", logging.WARNING, "Discarding unparseable args: %s",
                   ["--pipeline_type_check", "--my_option=3"])
    assert keep.filter(typed)
    assert formatter.format(typed) == "ufl preprocess: warning: Beam ignored options it does not know: --my_option=3"
    again = record("apache_beam.options.pipeline_options", logging.WARNING, "Discarding unparseable args: %s",
                   ["--my_option=3"])
    assert not keep.filter(again)  # once
    served = record("ufl.serve", logging.INFO, "serving model %s", "digits")
    assert keep.filter(served) and formatter.format(served) == "ufl serve: serving model digits"
    other = record("matplotlib", logging.WARNING, "font not found")
    assert keep.filter(other) and formatter.format(other) == "ufl preprocess: warning: font not found"
