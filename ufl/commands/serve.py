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
  ufl serve --model_base_path work/models/patches16 --port 0 --grpc_socket_path /tmp/ufl.sock  # Unix socket only
  ufl serve --model_base_path work/models/patches16 --free_ports --access_log -     # any free ports, log to stdout

clients: any TF-Serving client, e.g. ufl.export.client.predict("127.0.0.1:8500", "patches16", patches)
or  curl -d '{"instances": [[0.1, ...]]}' http://127.0.0.1:8501/v1/models/patches16:predict
"""

TF_SERVING_BINARY = "tensorflow_model_server"
#: Flags of ufl serve that tensorflow_model_server does not have (refused with --backend tfserving).
UFL_ONLY_FLAGS = ("access_log", "free_ports")
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
        "appear. Flags are tensorflow_model_server's and mean the same (dashes also accepted); --host, "
        "--free_ports, --access_log and --backend are ufl's own.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--port", type=int, default=8500,
        help="gRPC TCP port (default 8500; 0 = no TCP port, serve on --grpc_socket_path only)")
    add("--grpc_socket_path", "--grpc-socket-path", default="",
        help="also serve gRPC on this Unix socket, for clients on the same machine (unix:PATH)")
    add("--rest_api_port", "--rest-api-port", type=int, default=8501, help="REST port (default 8501; 0 = off)")
    add("--rest_api_timeout_in_ms", "--rest-api-timeout-in-ms", type=int, default=30000,
        help="REST requests not run within this time get HTTP 504 (default 30000)")
    add("--host", default="127.0.0.1",
        help="(ufl) interface to bind (default 127.0.0.1; 0.0.0.0 serves other machines)")
    add("--free_ports", "--free-ports", action="store_true",
        help="(ufl) bind any free gRPC and REST ports instead of --port and --rest_api_port (a 0 there still "
        "turns that API off); the ports are printed when serving starts")
    add("--model_name", "--model-name", default="default", help="served name of --model_base_path's model")
    add("--model_base_path", "--model-base-path", help="MODELS/NAME folder holding integer versions")
    add("--model_config_file", "--model-config-file",
        help="ModelServerConfig text proto listing several models (ufl export writes MODELS/models.config)")
    add("--model_config_file_poll_wait_seconds", "--model-config-file-poll-wait-seconds", type=float, default=0,
        help="seconds between reads of --model_config_file, applied when it changes (default 0 = read once)")
    add("--allow_version_labels_for_unavailable_models", "--allow-version-labels-for-unavailable-models",
        type=_boolean, nargs="?", const=True, default=False,
        help="let version_labels name versions that are not being served (default false: refused)")
    add("--enable_batching", "--enable-batching", type=_boolean, nargs="?", const=True, default=False,
        help="batch concurrent requests to the same model version and signature")
    add("--batching_parameters_file", "--batching-parameters-file",
        help="BatchingParameters text proto (ufl export writes MODELS/batching.config)")
    add("--file_system_poll_wait_seconds", "--file-system-poll-wait-seconds", type=float, default=1.0,
        help="seconds between scans for new model versions (default 1; 0 = only at start)")
    add("--enable_model_warmup", "--enable-model-warmup", type=_boolean, nargs="?", const=True, default=True,
        help="replay assets.extra/tf_serving_warmup_requests before serving a version (default true)")
    add("--enable_serialization_as_tensor_content", "--enable-serialization-as-tensor-content",
        type=_boolean, nargs="?", const=True, default=False,
        help="answer Predict in TensorProto.tensor_content instead of the typed fields (float_val, ...)")
    add("--enable_grpc_healthcheck_service", "--enable-grpc-healthcheck-service", type=_boolean, nargs="?",
        const=True, default=False,
        help="serve grpc.health.v1.Health: SERVING once every model has a version available")
    add("--monitoring_config_file", "--monitoring-config-file",
        help='MonitoringConfig text proto; prometheus_config { enable: true path: "/monitoring/prometheus/'
        'metrics" } serves Prometheus metrics on the REST port')
    add("--access_log", "--access-log",
        help="(ufl) append one JSON line per request to this file ('-' = stdout); default off")
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
        help="(ufl) ufl: this Python server; tfserving: exec tensorflow_model_server with the same flags "
        "(extra unknown flags are passed to it); auto (default): tfserving when it is on PATH, else ufl")
    parser.set_defaults(run=run, accepts_extra_args=True)


def _path_flag(name: str, value: str) -> str:
    return f"--{name}={os.path.abspath(value)}"


def tfserving_command(args, binary: str = TF_SERVING_BINARY) -> list:
    """The ``tensorflow_model_server`` command line equivalent to ``ufl serve`` ``args``."""
    command = [binary, f"--port={args.port}", f"--rest_api_port={args.rest_api_port}"]
    if args.grpc_socket_path:
        command.append(_path_flag("grpc_socket_path", args.grpc_socket_path))
    if args.model_config_file:
        command.append(_path_flag("model_config_file", args.model_config_file))
        if args.model_config_file_poll_wait_seconds:
            command.append("--model_config_file_poll_wait_seconds="
                           f"{int(round(args.model_config_file_poll_wait_seconds))}")
    else:
        command += [f"--model_name={args.model_name}", _path_flag("model_base_path", args.model_base_path)]
    if args.enable_batching:
        command.append("--enable_batching=true")
        if args.batching_parameters_file:
            command.append(_path_flag("batching_parameters_file", args.batching_parameters_file))
    command += [f"--file_system_poll_wait_seconds={int(round(args.file_system_poll_wait_seconds))}",
                f"--enable_model_warmup={'true' if args.enable_model_warmup else 'false'}"]
    for flag in ("allow_version_labels_for_unavailable_models", "enable_serialization_as_tensor_content",
                 "enable_grpc_healthcheck_service"):
        if getattr(args, flag):
            command.append(f"--{flag}=true")
    if args.rest_api_timeout_in_ms != 30000:
        command.append(f"--rest_api_timeout_in_ms={args.rest_api_timeout_in_ms}")
    if args.monitoring_config_file:
        command.append(_path_flag("monitoring_config_file", args.monitoring_config_file))
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
        for flag in UFL_ONLY_FLAGS:
            if getattr(args, flag):
                raise ConfigError(f"--{flag} is ufl serve's own; {TF_SERVING_BINARY} has no such flag, so drop "
                                  "it or use --backend ufl")
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


def _ports(args) -> tuple:
    """(gRPC TCP port or None, REST port or None) as ModelServer takes them."""
    from ufl.config import ConfigError
    if args.port == 0 and not args.grpc_socket_path:
        raise ConfigError("--port 0 turns the gRPC TCP port off (as in tensorflow_model_server), so give "
                          "--grpc_socket_path too; for any free port use --free_ports")
    grpc_port = None if args.port == 0 else (0 if args.free_ports else args.port)
    rest_port = None if args.rest_api_port == 0 else (0 if args.free_ports else args.rest_api_port)
    if rest_port and rest_port == grpc_port:
        print("ufl serve: error: --rest_api_port cannot be same as --port; the REST API is not served",
              file=sys.stderr)
        rest_port = None
    return grpc_port, rest_port


def _build_server(args):
    """The ModelServer of ``args`` with its ModelManager, models not loaded yet (config checked)."""
    from ufl.config import ConfigError
    from ufl.export import model_manager
    from ufl.export.batching import read_batching_parameters
    from ufl.export.metrics import read_monitoring_config
    from ufl.export.server import MAX_MESSAGE_BYTES, ModelServer

    if args.model_config_file:
        config = model_manager.read_model_config_file(args.model_config_file)
        source = f"model_config_file {args.model_config_file!r}"
    else:
        config = model_manager.single_model_config(args.model_name, os.path.abspath(args.model_base_path))
        source = "--model_base_path"
    for flag in THREAD_FLAGS + ("rest_api_timeout_in_ms",):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag} {getattr(args, flag)} is negative; use 0 for the default or a positive "
                              "value")
    grpc_port, rest_port = _ports(args)
    channel_arguments = _channel_arguments(args.grpc_channel_arguments)
    max_message_bytes = dict(channel_arguments).get("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)
    batching = read_batching_parameters(args.batching_parameters_file) if args.enable_batching else None
    metrics_path = read_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file else None
    if metrics_path and rest_port is None:
        raise ConfigError("--monitoring_config_file serves metrics on the REST port; give --rest_api_port")
    session_config = model_manager.session_config(intra_op_threads=args.tensorflow_intra_op_parallelism,
                                                  inter_op_threads=args.tensorflow_inter_op_parallelism)
    manager = model_manager.ModelManager(
        config, poll_wait_seconds=args.file_system_poll_wait_seconds, enable_warmup=args.enable_model_warmup,
        source=source, session_config=session_config, load=False,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        config_file=args.model_config_file, config_poll_wait_seconds=args.model_config_file_poll_wait_seconds)
    server = ModelServer(
        manager, host=args.host, port=grpc_port, grpc_socket_path=args.grpc_socket_path or None,
        rest_api_port=rest_port, batching=batching, max_threads=args.grpc_max_threads or None,
        max_message_bytes=max_message_bytes,
        channel_arguments=[item for item in channel_arguments if item[0] != "grpc.max_receive_message_length"],
        tensor_content=args.enable_serialization_as_tensor_content,
        health_service=args.enable_grpc_healthcheck_service, metrics_path=metrics_path,
        access_log=args.access_log, rest_timeout_seconds=args.rest_api_timeout_in_ms / 1000)
    return server


def _ready_line(args, server) -> str:
    apis = []
    if server.port is not None:
        apis.append(f"gRPC API on {args.host}:{server.port}")
    if server.grpc_socket_path:
        apis.append(f"gRPC API on unix:{os.path.abspath(server.grpc_socket_path)}")
    if server.rest_api_port:
        apis.append(f"REST API on http://{args.host}:{server.rest_api_port}/v1/models/NAME")
    manager = server.manager
    models = "; ".join(f"{name} (versions {manager.available_versions(name)})" for name in manager.model_names())
    return f"ufl serve: {', '.join(apis)}; models: {models}"


def _serve(args) -> int:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="ufl serve: %(message)s", stream=sys.stderr)
    server = _build_server(args)
    stopping = threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: stopping.set())
    try:
        server.start()  # binds the ports first: a busy port fails before any model loads
        print(_ready_line(args, server), flush=True)
        stopping.wait()
        print("ufl serve: stopping", file=sys.stderr, flush=True)
    finally:
        server.stop()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return 0
