"""`ufl preprocess` on the command line: a run with its counters, and one-line errors before any work."""
import json

import pytest

from ufl.cli import main


def test_cli_writes_data_and_prints_counters(tmp_path, capsys):
    out = tmp_path / "digits"
    code = main(["preprocess", "--source", "builtin:digits", "--extract", "full", "--normalize", "scale,mean",
                 "--out", str(out), "--num-shards", "1", "--eval-fraction", "0",
                 "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert ("counters: images_read=1797, images_rejected=0, patches_train=1797, patches_eval=0, "
            "shards_written=1") in printed
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["patch_size"] == [8, 8] and metadata["normalization"]["steps"] == ["scale", "mean"]
    config = json.loads((out / "preprocess_config.json").read_text())
    assert config["source"] == "builtin:digits" and config["extract"] == "full"


@pytest.mark.parametrize("args, message", [
    (["--source", "builtin:natural", "--patch-size", "0"], "patch_size 0 is invalid; use --patch-size with a positive"),
    (["--source", "builtin:natural", "--eval-fraction", "1"], "eval_fraction 1.0 is invalid; use --eval-fraction in"),
    (["--source", "ftp:x"], "source scheme 'ftp' is invalid"),
    (["--source", "npz:/nonexistent/ufl.npz"], "file '/nonexistent/ufl.npz' of source npz:/nonexistent/ufl.npz "
                                               "does not exist"),
    (["--source", "images:/nonexistent/ufl/*.png"], "matches no files"),
    (["--source", "builtin:natural", "--normalize", "zca,whiten"], "normalize step 'whiten' is invalid"),
    (["--source", "builtin:natural", "stray"], "argument 'stray' is invalid; pass Beam options as --name=value"),
    (["--source", "builtin:natural", "--patch-szie", "8"],
     "option --patch-szie is not an option of ufl preprocess or of Beam; did you mean --patch-size?"),
    (["--source", "builtin:natural", "--direct_num_worker=1"],
     "option --direct_num_worker is not an option of ufl preprocess or of Beam; did you mean --direct_num_workers?"),
    (["--source", "builtin:natural", "--runner", "DirectRunner", "--dask_client_adress=127.0.0.1:8786"],
     "option --dask_client_adress is not an option of ufl preprocess or of Beam; did you mean "
     "--dask_client_address?"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["preprocess", "--out", str(tmp_path / "data")] + args) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_beam_options_in_both_spellings_reach_beam(tmp_path):
    out = tmp_path / "digits"
    assert main(["preprocess", "--source", "builtin:digits", "--extract", "full", "--normalize", "none",
                 "--out", str(out), "--num-shards", "1", "--direct_running_mode", "in_memory",
                 "--direct_num_workers=1", "--save_main_session"]) == 0
    assert (out / "metadata.json").exists()


def test_existing_complete_data_dir_needs_overwrite(tmp_path, capsys):
    (tmp_path / "metadata.json").write_text("{}")
    assert main(["preprocess", "--source", "builtin:natural", "--out", str(tmp_path)]) == 2
    assert "already holds a complete ufl DATA/ directory; pass --overwrite" in capsys.readouterr().err
