"""`ufl serve`: serve exported models over the TensorFlow Serving API (gRPC and REST).

Takes ``tensorflow_model_server``'s flags, so a command line works with either server.
"""
import argparse
import os
import shutil
import signal
import sys
import threading

EXAMPLES = """\
examples:
  ufl serve --model_name patches16 --model_base_path work/models/patches16
  ufl serve --model_config_file work/models/models.config --enable_batching \\
      --batching_parameters_file work/models/batching.config
  ufl serve --model_config_file work/models/models.config --backend tfserving   # the real server

clients: any TF-Serving client, e.g. ufl.export.client.predict("127.0.0.1:8500", "patches16", patches)
or  curl -d '{"instances": [[0.1, ...]]}' http://127.0.0.1:8501/v1/models/patches16:predict
"""

TF_SERVING_BINARY = "tensorflow_model_server"
#: Thread-count flags: passed on to tensorflow_model_server when set (0 = its default), never negative.
THREAD_FLAGS = ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "grpc_max_threads")


def _boolean(text: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve MODELS/ over the TF-Serving API (gRPC :8500, REST :8501)",
        description="Serve exported SavedModels over the TensorFlow Serving API: PredictionService "
        "(Predict, GetModelMetadata) and ModelService (GetModelStatus) over gRPC, and the REST API "
        "/v1/models/NAME[:predict]. Serves each model's newest version and loads new versions as they "
        "appear. Flags are tensorflow_model_server's (dashes also accepted).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (default 8500; 0 = any free port)")
    add("--rest_api_port", "--rest-api-port", type=int, default=8501, help="REST port (default 8501; 0 = off)")
    add("--host", default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; 0.0.0.0 serves other machines)")
    add("--model_name", "--model-name", default="default", help="served name of --model_base_path's model")
    add("--model_base_path", "--model-base-path", help="MODELS/NAME folder holding integer versions")
    add("--model_config_file", "--model-config-file",
        help="ModelServerConfig text proto listing several models (ufl export writes MODELS/models.config)")
    add("--enable_batching", "--enable-batching", type=_boolean, nargs="?", const=True, default=False,
        help="batch concurrent requests to the same model version and signature")
    add("--batching_parameters_file", "--batching-parameters-file",
        help="BatchingParameters text proto (ufl export writes MODELS/batching.config)")
    add("--file_system_poll_wait_seconds", "--file-system-poll-wait-seconds", type=float, default=1.0,
        help="seconds between scans for new model versions (default 1; 0 = only at start)")
    add("--enable_model_warmup", "--enable-model-warmup", type=_boolean, nargs="?", const=True, default=True,
        help="replay assets.extra/tf_serving_warmup_requests before serving a version (default true)")
    add("--tensorflow_intra_op_parallelism", "--tensorflow-intra-op-parallelism", type=int, default=0,
        help="threads one TensorFlow op may use (default 0 = one per core)")
    add("--tensorflow_inter_op_parallelism", "--tensorflow-inter-op-parallelism", type=int, default=0,
        help="threads running a request's independent ops in parallel (default 0 = one per core); each "
        "request also runs on its own gRPC thread")
    add("--grpc_max_threads", "--grpc-max-threads", type=int, default=0,
        help="gRPC worker threads (default max(16, 4 x CPUs))")
    add("--grpc_channel_arguments", "--grpc-channel-arguments", default="",
        help="comma-separated gRPC server arguments, e.g. grpc.max_receive_message_length=1048576")
    add("--backend", choices=("auto", "ufl", "tfserving"), default="auto",
        help="ufl: this Python server; tfserving: exec tensorflow_model_server with the same flags (extra "
        "unknown flags are passed to it); auto (default): tfserving when it is on PATH, else ufl")
    parser.set_defaults(run=run, accepts_extra_args=True)


def tfserving_command(args, binary: str = TF_SERVING_BINARY) -> list:
    """The ``tensorflow_model_server`` command line equivalent to ``ufl serve`` ``args``."""
    command = [binary, f"--port={args.port}", f"--rest_api_port={args.rest_api_port}"]
    if args.model_config_file:
        command.append(f"--model_config_file={os.path.abspath(args.model_config_file)}")
    else:
        command += [f"--model_name={args.model_name}",
                    f"--model_base_path={os.path.abspath(args.model_base_path)}"]
    if args.enable_batching:
        command.append("--enable_batching=true")
        if args.batching_parameters_file:
            command.append(f"--batching_parameters_file={os.path.abspath(args.batching_parameters_file)}")
    command += [f"--file_system_poll_wait_seconds={int(round(args.file_system_poll_wait_seconds))}",
                f"--enable_model_warmup={'true' if args.enable_model_warmup else 'false'}"]
    for flag in THREAD_FLAGS:
        if getattr(args, flag):
            command.append(f"--{flag}={getattr(args, flag)}")
    if args.grpc_channel_arguments:
        command.append(f"--grpc_channel_arguments={args.grpc_channel_arguments}")
    return command + list(args.extra_args)


def _channel_arguments(text: str) -> list:
    from ufl.config import ConfigError
    arguments = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("grpc."):
            raise ConfigError(f"grpc_channel_arguments item {item!r} is invalid; use grpc.NAME=VALUE[,...]")
        arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return arguments


def run(args) -> int:
    from ufl.config import ConfigError
    if bool(args.model_config_file) == bool(args.model_base_path):
        raise ConfigError("give exactly one of --model_base_path (with --model_name) or --model_config_file; "
                          f"got model_base_path={args.model_base_path!r}, "
                          f"model_config_file={args.model_config_file!r}")
    binary = shutil.which(TF_SERVING_BINARY)
    if args.backend == "tfserving" or (args.backend == "auto" and binary):
        if not binary:
            raise ConfigError(f"backend 'tfserving' needs {TF_SERVING_BINARY} on PATH; install TensorFlow "
                              "Serving or use --backend ufl")
        if args.host not in ("0.0.0.0", "::"):
            print(f"ufl serve: note: {TF_SERVING_BINARY} has no --host flag and binds all interfaces",
                  file=sys.stderr)
        command = tfserving_command(args, binary)
        print("ufl serve: exec " + " ".join(command), file=sys.stderr, flush=True)
        os.execv(binary, command)
    if args.extra_args:
        raise ConfigError(f"unrecognized arguments {args.extra_args}; they are passed on only with "
                          "--backend tfserving")
    return _serve(args)


def _serve(args) -> int:
    import logging
    from ufl.config import ConfigError
    from ufl.export import model_manager
    from ufl.export.client import MAX_MESSAGE_BYTES
    from ufl.export.batching import read_batching_parameters
    from ufl.export.server import ModelServer

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="ufl serve: %(message)s", stream=sys.stderr)
    if args.model_config_file:
        config = model_manager.read_model_config_file(args.model_config_file)
        source = f"model_config_file {args.model_config_file!r}"
    else:
        config = model_manager.single_model_config(args.model_name, os.path.abspath(args.model_base_path))
        source = "--model_base_path"
    for flag in THREAD_FLAGS:
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag} {getattr(args, flag)} is negative; use 0 for the default or a thread count")
    channel_arguments = _channel_arguments(args.grpc_channel_arguments)
    max_message_bytes = dict(channel_arguments).get("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)
    batching = read_batching_parameters(args.batching_parameters_file) if args.enable_batching else None
    session_config = model_manager.session_config(intra_op_threads=args.tensorflow_intra_op_parallelism,
                                                  inter_op_threads=args.tensorflow_inter_op_parallelism)
    manager = model_manager.ModelManager(config, poll_wait_seconds=args.file_system_poll_wait_seconds,
                                         enable_warmup=args.enable_model_warmup, source=source,
                                         session_config=session_config)
    server = ModelServer(manager, host=args.host, port=args.port,
                         rest_api_port=args.rest_api_port or None, batching=batching,
                         max_threads=args.grpc_max_threads or None, max_message_bytes=max_message_bytes,
                         channel_arguments=[item for item in channel_arguments
                                            if item[0] != "grpc.max_receive_message_length"])
    stopping = threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: stopping.set())
    try:
        server.start()
        rest = (f", REST API on http://{args.host}:{server.rest_api_port}/v1/models/NAME"
                if server.rest_api_port else "")
        models = "; ".join(f"{name} (versions {manager.available_versions(name)})"
                           for name in manager.model_names())
        print(f"ufl serve: gRPC API on {args.host}:{server.port}{rest}; models: {models}", flush=True)
        stopping.wait()
        print("ufl serve: stopping", file=sys.stderr, flush=True)
        server.stop()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return 0

