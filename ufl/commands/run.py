"""`ufl run`: the whole batch job — preprocess → train → export → serve → one gRPC call → stop → summary."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

EXAMPLES = """examples:
  ufl run --workdir work                                   # builtin:natural, preset sparse-coding
  ufl run --source builtin:digits --preset dense-ae --workdir work-digits
  ufl run --preset sparse-coding --epochs 1 --workdir /tmp/quick

Layout written under WORKDIR: data/ (ufl preprocess), run/ (ufl train), models/NAME/VERSION/ (ufl export).
Rerunning reuses a complete data/ made from the same source, resumes or reuses run/, and exports a new version.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="the whole batch job: preprocess, train, export, serve and check one gRPC answer",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="folder for data/, run/ and models/")
    parser.add_argument("--source", default=None,
                        help="image source spec (default: the preset's own, builtin:natural for sparse-coding)")
    parser.add_argument("--preset", default="sparse-coding", help="training preset (ufl train --list-presets)")
    parser.add_argument("--name", default=None, help="served model name (default: the preset name)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--restart", action="store_true",
                        help="preprocess and train again from scratch instead of reusing data/ and run/")
    parser.add_argument("--no-serve", action="store_true", help="stop after export (no server check)")
    parser.set_defaults(run=run)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminal_stderr():
    """``sys.stderr`` for a child process: the terminal, also while ufl hides descriptor 2 from Beam's
    workers (None, i.e. inherited, when ``sys.stderr`` has no descriptor, as under pytest's capture)."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return None


def stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def done(start: float) -> None:
    print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)


def run(args) -> int:
    from ufl.trainers.presets import get_preset

    workdir = args.workdir  # paths are shown as the user spelled them
    data_dir, run_dir, model_base = (os.path.join(workdir, name) for name in ("data", "run", "models"))
    preset = get_preset(args.preset)
    name = args.name or args.preset
    pipeline_start = time.perf_counter()
    preprocess_stage(args, preset, data_dir)
    metrics = train_stage(args, data_dir, run_dir)
    version_dir = export_stage(run_dir, model_base, name)
    if not args.no_serve and not serve_check(args, data_dir, model_base, name, version_dir):
        return 1
    print_summary(time.perf_counter() - pipeline_start, data_dir, run_dir, version_dir, model_base, metrics)
    return 0


def preprocess_stage(args, preset, data_dir: str) -> None:
    """DATA/ from the preset's data recipe (or ``--source``), reused when complete and made from that source."""
    from ufl.config import PreprocessConfig
    from ufl.pipeline import load_metadata, preprocess

    start = stage(f"preprocess {args.source or preset.data.get('source')} -> {data_dir}")
    # A preset's data recipe may carry notes for people (e.g. an alternative source); keep the config fields.
    fields = {field.name for field in dataclasses.fields(PreprocessConfig)}
    data_options = {key: value for key, value in preset.data.items() if key in fields - {"out", "overwrite"}}
    source = args.source or data_options.pop("source", "builtin:natural")
    data_options.pop("source", None)
    if not args.restart and _is_complete(data_dir, source, load_metadata):
        print(f"   reusing complete {data_dir} (use --restart to preprocess again)")
    else:
        preprocess(PreprocessConfig(source=source, out=data_dir, overwrite=True, **data_options))
    done(start)


def train_stage(args, data_dir: str, run_dir: str) -> dict:
    """RUN/ trained (or resumed, or found complete) with the preset; returns its metrics."""
    from ufl.commands.train import build_train_config
    from ufl.trainers.strategy import choose_strategy
    from ufl.trainers.train_loop import train

    start = stage(f"train {args.preset} -> {run_dir}")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    train_config = build_train_config(args.preset, data=data_dir, out=run_dir, overrides=overrides,
                                      restart=args.restart)
    metrics = train(train_config, strategy=choose_strategy(train_config.strategy))
    done(start)
    return metrics


def export_stage(run_dir: str, model_base: str, name: str) -> str:
    """The next version of MODELS/NAME from RUN/; returns its folder."""
    from ufl.config import ExportConfig
    from ufl.export import export_run

    start = stage(f"export -> {model_base}/{name}")
    version_dir = export_run(ExportConfig(run=run_dir, model_base=model_base, name=name))
    print(f"   wrote {version_dir}")
    done(start)
    return version_dir


def serve_check(args, data_dir: str, model_base: str, name: str, version_dir: str) -> bool:
    """Serves MODELS/ on free local ports and checks one gRPC Predict against the SavedModel in process."""
    from ufl.export.saved_model import sample_raw_patches
    from ufl.pipeline import load_metadata

    start = stage("serve and check one gRPC Predict answer")
    patches, _ = sample_raw_patches(load_metadata(data_dir), 16)
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ufl.cli", "serve", "--port", str(grpc_port),
         "--rest_api_port", str(rest_port), "--model_name", name,
         "--model_base_path", os.path.join(model_base, name)] + (["--verbose"] if args.verbose else []),
        stderr=_terminal_stderr())
    try:
        agrees = _served_equals_in_process(f"127.0.0.1:{grpc_port}", name, patches, version_dir)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if agrees:
        done(start)
    return agrees


def _served_equals_in_process(target: str, name: str, patches, version_dir: str) -> bool:
    import numpy as np
    import tensorflow as tf

    from ufl.export.client import predict, wait_until_available
    from ufl.export.signatures import PATCHES_INPUT, SERVING_DEFAULT

    wait_until_available(target, name, timeout=120)
    served = predict(target, name, patches, signature_name=SERVING_DEFAULT, input_key=PATCHES_INPUT)
    local = tf.saved_model.load(version_dir).signatures[SERVING_DEFAULT](**{PATCHES_INPUT: tf.constant(patches)})
    local = next(iter(local.values())).numpy()
    error = float(np.max(np.abs(served - local)))
    print(f"   gRPC Predict on {target}: {len(patches)} patches -> codes {served.shape}, "
          f"max |served - in-process| = {error:.2e}")
    if not np.allclose(served, local, rtol=1e-4, atol=1e-5):
        print("ufl run: error: the served codes differ from the in-process SavedModel's", file=sys.stderr)
        return False
    return True


def print_summary(seconds: float, data_dir: str, run_dir: str, version_dir: str, model_base: str,
                  metrics: dict) -> None:
    plots = os.path.join(run_dir, "plots")
    print(f"\n== ufl run finished in {seconds:.0f} s")
    print(f"   DATA    {data_dir}")
    print(f"   RUN     {run_dir}  (plots: {plots}/filters.png, reconstructions.png, loss.png)")
    print(f"   MODELS  {version_dir}")
    for key in ("eval_objective", "train_objective", "mean_nonzeros", "examples_per_second"):
        if key in metrics:
            print(f"   {key:<20} {metrics[key]}")
    print(f"   serve it with:  ufl serve --model_config_file {os.path.join(model_base, 'models.config')} "
          "--port 8500 --rest_api_port 8501")


def _is_complete(data_dir: str, source: str, load_metadata) -> bool:
    """DATA/ exists, is complete (metadata.json written last) and was made from ``source``."""
    try:
        return load_metadata(data_dir).get("source") == source
    except Exception:  # an absent or stale DATA/ is simply rebuilt
        return False
