"""Serving benchmark: gRPC Predict against `ufl serve` next to calling the same SavedModel in process.

Measures p50/p99 latency and throughput (patches/s) for batches of 1 and 256 patches (16x16 for the built-in
model; an exported model's own input shape, uniform random values or the rows of ``--inputs``), with 1 and 8
concurrent clients (and the CPU time each call costs, client + server, which the load of other work on
the machine does not change), for: the SavedModel's ``serving_default`` called in this process (the peer), and
``ufl serve`` (a separate process, as deployed) called over gRPC with the official TF-Serving stubs: answers in
``tensor_content`` (``served``, what ufl's own client asks for), in the typed fields as
``tensorflow_model_server`` answers by default (``served_typed``), over a Unix socket instead of TCP
(``served_unix``), and with ``--enable_batching`` (``served_batching``); next to the thinnest grpcio server around the same SavedModel
(``minimal_server``: decode, call, encode, nothing else), a grpcio server that answers every request
with a ready-made response of the model's output size (``grpc_floor``: what moving the request and the
answer through Python gRPC costs, with no model), and ufl serve's own way of running the model (a
TensorFlow session callable, as tensorflow_model_server) called in this process (``session``), so that
served ~= session + grpc_floor + ufl's request handling. Prints one JSON line; goals: serving overhead
<= 1 ms p50 at batch 1, throughput at batch 256 >= 90% of in-process, typed-field answers <= 0.2 ms p50
more than tensor_content at batch 1, ufl serve's own handling (served - session - grpc_floor) <= 0.15 ms
p50 at batch 1.

    python benchmarks/serving.py                      # a sparse-coding-like model: 20 ISTA steps, 256 codes
    python benchmarks/serving.py --model-dir work/models/NAME/1     # an exported model (e.g. `make run`'s)
    python benchmarks/serving.py --model-dir MODELS/NAME/1 --inputs patches.npy   # ... on real patches
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PATCH_DIM = 16 * 16


class SparseCoder(tf.Module):
    """ISTA inference in a tf.while_loop over a fixed dictionary, as ufl's sparse coding serves codes."""

    def __init__(self, n_codes: int, n_steps: int):
        super().__init__()
        atoms = np.random.default_rng(0).normal(size=(n_codes, PATCH_DIM)).astype(np.float32)
        self.dictionary = tf.Variable(atoms / np.linalg.norm(atoms, axis=1, keepdims=True))
        self.n_steps = n_steps

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH_DIM], tf.float32)])
    def serve(self, patches):
        gram = tf.matmul(self.dictionary, self.dictionary, transpose_b=True)
        step = 1.0 / tf.reduce_max(tf.reduce_sum(tf.abs(gram), axis=1))
        target = tf.matmul(patches, self.dictionary, transpose_b=True)

        def body(i, codes):
            moved = codes - step * (tf.matmul(codes, gram) - target)
            return i + 1, tf.sign(moved) * tf.nn.relu(tf.abs(moved) - step * 0.1)

        codes = tf.while_loop(lambda i, _: i < self.n_steps, body, (tf.constant(0), tf.zeros_like(target)))[1]
        return {"codes": codes}


def run_clients(call, batch: np.ndarray, clients: int, seconds: float, min_calls: int) -> tuple:
    """Runs ``call(batch)`` from ``clients`` threads for ~``seconds``; returns (latencies in s, wall s)."""
    latencies = [[] for _ in range(clients)]
    stop_at = time.perf_counter() + seconds

    def client(index):
        own = latencies[index]
        while time.perf_counter() < stop_at or len(own) < min_calls:
            start = time.perf_counter()
            call(batch)
            own.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [value for values in latencies for value in values], time.perf_counter() - start


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (or of process ``pid``), all threads."""
    if pid is None:
        return time.process_time()
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(calls: dict, batch: np.ndarray, clients: int, seconds: float, rounds: int, server_pids: dict) -> dict:
    """Latency percentiles, throughput and CPU per call of each ``calls[label]``, in alternating rounds.

    Other work on the machine comes and goes; alternating the peers round by round exposes them to the
    same load. CPU milliseconds per call (client + server process) do not depend on that load at all.
    """
    totals = {label: ([], 0.0, 0.0) for label in calls}
    for label, call in calls.items():
        call(batch)  # warm the path (first gRPC connection, first eager dispatch)
    for _ in range(rounds):
        for label, call in calls.items():
            pid = server_pids.get(label)
            cpu_before = cpu_seconds() + (cpu_seconds(pid) if pid else 0.0)
            latencies, wall = run_clients(call, batch, clients, seconds / rounds, 2)
            cpu = cpu_seconds() + (cpu_seconds(pid) if pid else 0.0) - cpu_before
            latency_list, wall_total, cpu_total = totals[label]
            totals[label] = (latency_list + latencies, wall_total + wall, cpu_total + cpu)
    results = {}
    for label, (latencies, wall, cpu) in totals.items():
        flat = np.asarray(latencies) * 1e3
        results[label] = {"p50_ms": round(float(np.percentile(flat, 50)), 3),
                          "p99_ms": round(float(np.percentile(flat, 99)), 3),
                          "patches_per_s": round(len(flat) * len(batch) / wall, 1), "calls": int(len(flat)),
                          "cpu_ms_per_call": round(cpu * 1e3 / len(flat), 3)}
    return results


def minimal_server(model_dir: str) -> int:
    """The thinnest grpcio PredictionService (run as ``serving.py --minimal-server DIR``; prints its port).

    With DIR = ``floor:K`` it answers every Predict with a ready-made ``(N, K)`` float32 response, N the
    request's batch size: what any Python gRPC server pays to move a request and its answer. With a
    model DIR it decodes ``tensor_content``, calls the SavedModel's ``serving_default`` and encodes the
    output, with no model spec, validation, versions or batching: ufl serve minus its TF-Serving features.
    """
    import concurrent.futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    floor_codes = int(model_dir.split(":")[1]) if model_dir.startswith("floor:") else None
    function = None if floor_codes else tf.saved_model.load(model_dir).signatures["serving_default"]
    ready_made = {}

    class Minimal(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if function is None:
                (proto,) = request.inputs.values()
                rows = proto.tensor_shape.dim[0].size
                if rows not in ready_made:
                    ready_made[rows] = predict_pb2.PredictResponse()
                    output = ready_made[rows].outputs["codes"]
                    output.dtype = proto.dtype
                    output.tensor_shape.dim.add(size=rows)
                    output.tensor_shape.dim.add(size=floor_codes)
                    output.tensor_content = np.zeros((rows, floor_codes), np.float32).tobytes()
                return ready_made[rows]
            response = predict_pb2.PredictResponse()
            (key, proto), = request.inputs.items()
            shape = [dim.size for dim in proto.tensor_shape.dim]
            inputs = np.frombuffer(proto.tensor_content, np.float32).reshape(shape)
            (name, value), = function(**{key: tf.constant(inputs)}).items()
            value = value.numpy()
            output = response.outputs[name]
            output.dtype = proto.dtype
            for size in value.shape:
                output.tensor_shape.dim.add(size=size)
            output.tensor_content = value.tobytes()
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Minimal(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"gRPC API on 127.0.0.1:{port};", flush=True)
    server.wait_for_termination()
    return 0


def start_minimal_server(model_dir: str) -> tuple:
    """Starts :func:`minimal_server` in a subprocess; returns (process, gRPC port)."""
    command = [sys.executable, os.path.abspath(__file__), "--minimal-server", model_dir]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, int(process.stdout.readline().split("127.0.0.1:")[1].rstrip(";\n"))


def start_server(models: str, name: str, batching_file: str | None, socket_path: str) -> tuple:
    """Starts ``ufl serve`` for MODELS/NAME in a subprocess (a free TCP port and the Unix socket
    ``socket_path``); returns (process, gRPC port)."""
    command = [sys.executable, "-m", "ufl.cli", "serve", "--free_ports", "--rest_api_port", "0",
               "--grpc_socket_path", socket_path, "--model_name", name,
               "--model_base_path", os.path.join(models, name), "--backend", "ufl", "--file_system_poll_wait_seconds", "0"]
    if batching_file:
        command += ["--enable_batching", "--batching_parameters_file", batching_file]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    port = re.search(r"gRPC API on [^,;]+:(\d+)", line)
    if port is None:
        process.kill()
        raise RuntimeError(f"ufl serve did not start: {line!r}")
    return process, int(port[1])


def input_batches(spec: tf.TensorSpec, inputs_file, *, sizes) -> dict:
    """``{size: float32 batch}`` of the signature's input shape: the first rows of ``inputs_file`` (.npy), or
    uniform random values in [0, 1) (raw pixels, as exported models take them)."""
    row_shape = tuple(spec.shape[1:])
    if inputs_file:
        rows = np.load(inputs_file).astype(np.float32)
        if rows.shape[1:] != row_shape or len(rows) < max(sizes):
            raise SystemExit(f"--inputs {inputs_file} holds an array of shape {rows.shape}; the model takes rows "
                             f"of shape {row_shape}: pass at least {max(sizes)} of them")
        return {size: rows[:size] for size in sizes}
    if None in row_shape:
        raise SystemExit(f"the model's input {spec.name!r} has shape {spec.shape}; pass --inputs with rows of a "
                         "fixed shape")
    rng = np.random.default_rng(0)
    return {size: rng.uniform(size=(size,) + row_shape).astype(np.float32) for size in sizes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="an exported version folder MODELS/NAME/VERSION (default: build one)")
    parser.add_argument("--inputs", help="a .npy array of >= 256 model inputs (rows) to send instead of uniform "
                                          "random values")
    parser.add_argument("--n-codes", type=int, default=256)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement and peer")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per measurement")
    parser.add_argument("--minimal-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal_server is not None:
        return minimal_server(args.minimal_server)

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from ufl.export.client import CHANNEL_OPTIONS, wait_until_available
    from ufl.export.model_manager import ServableVersion
    from ufl.export.tensor_codec import TENSOR_CONTENT_METADATA, fill_tensor_proto, ndarray_from_tensor_proto

    workdir = tempfile.mkdtemp(prefix="ufl-serving-bench-")
    name = "bench"
    version_dir = os.path.join(workdir, name, "1")
    if args.model_dir:
        shutil.copytree(args.model_dir, version_dir)
    else:
        module = SparseCoder(args.n_codes, args.n_steps)
        tf.saved_model.save(module, version_dir, signatures={"serving_default": module.serve})
    batching_file = os.path.join(workdir, "batching.config")
    with open(batching_file, "w") as handle:
        handle.write("max_batch_size { value: 256 }\nbatch_timeout_micros { value: 0 }\n"
                     "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 1000 }\n")

    function = tf.saved_model.load(version_dir).signatures["serving_default"]
    input_key = next(iter(function.structured_input_signature[1]))

    def in_process(batch):
        return next(iter(function(**{input_key: tf.constant(batch)}).values())).numpy()

    servable = ServableVersion(name, 1, version_dir)

    def session(batch):
        return servable.run("serving_default", {input_key: batch})

    batches = input_batches(function.structured_input_signature[1][input_key], args.inputs, sizes=(1, 256))
    results = {"model": args.model_dir or f"ISTA {args.n_steps} steps, {args.n_codes} codes, 16x16 patches",
               "cpus": os.cpu_count(), "load_average_before": [round(value, 2) for value in os.getloadavg()]}
    servers, channels, server_pids = [], [], {}
    try:
        calls_by_size = {size: {"in_process": in_process, "session": session} for size in batches}
        n_codes = next(iter(session(batches[1]).values())).shape[-1]
        # (label, batching file, address, answer metadata): tensor_content answers unless "typed".
        served_peers = {None: [("served", "tcp", (TENSOR_CONTENT_METADATA,)), ("served_typed", "tcp", ()),
                               ("served_unix", "unix", (TENSOR_CONTENT_METADATA,))],
                        batching_file: [("served_batching", "tcp", (TENSOR_CONTENT_METADATA,))]}
        for batching, peers in served_peers.items():
            socket_path = os.path.join(workdir, f"grpc-{len(servers)}.sock")
            process, port = start_server(workdir, name, batching, socket_path)
            servers.append(process)
            wait_until_available(f"127.0.0.1:{port}", name, timeout=120)
            for label, transport, metadata in peers:
                server_pids[label] = process.pid
                target = f"127.0.0.1:{port}" if transport == "tcp" else f"unix:{socket_path}"
                channels.append(grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channels[-1])
                for size, batch in batches.items():
                    request = predict_pb2.PredictRequest()
                    request.model_spec.name = name
                    fill_tensor_proto(request.inputs[input_key], batch)

                    def over_grpc(_, request=request, stub=stub, metadata=metadata):
                        response = stub.Predict(request, timeout=60, metadata=metadata)
                        return ndarray_from_tensor_proto(next(iter(response.outputs.values())))

                    np.testing.assert_allclose(over_grpc(batch), in_process(batch), rtol=1e-4, atol=1e-5)
                    calls_by_size[size][label] = over_grpc
        for label, model in (("grpc_floor", f"floor:{n_codes}"), ("minimal_server", version_dir)):
            process, port = start_minimal_server(model)
            servers.append(process)
            server_pids[label] = process.pid
            channels.append(grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS))
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channels[-1])
            for size, batch in batches.items():
                request = predict_pb2.PredictRequest()
                fill_tensor_proto(request.inputs[input_key], batch)

                def over_grpc(_, request=request, stub=stub):
                    response = stub.Predict(request, timeout=60)
                    return [ndarray_from_tensor_proto(value) for value in response.outputs.values()]

                calls_by_size[size][label] = over_grpc
        for size, batch in batches.items():
            for clients in (1, 8):
                measured = measure(calls_by_size[size], batch, clients, args.seconds, args.rounds, server_pids)
                for label, figures in measured.items():
                    results[f"{label}_b{size}_c{clients}"] = figures
    finally:
        for channel in channels:
            channel.close()
        for process in servers:
            process.terminate()
            process.wait(timeout=30)
    shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_after"] = [round(value, 2) for value in os.getloadavg()]

    for label in ("served", "served_batching"):
        results[f"{label}_overhead_p50_ms_b1_c1"] = round(
            results[f"{label}_b1_c1"]["p50_ms"] - results["in_process_b1_c1"]["p50_ms"], 3)
        for clients in (1, 8):
            results[f"{label}_throughput_ratio_b256_c{clients}"] = round(
                results[f"{label}_b256_c{clients}"]["patches_per_s"] /
                results[f"in_process_b256_c{clients}"]["patches_per_s"], 3)
            results[f"{label}_throughput_ratio_b1_c{clients}"] = round(
                results[f"{label}_b1_c{clients}"]["patches_per_s"] /
                results[f"in_process_b1_c{clients}"]["patches_per_s"], 3)
    for label in ("served", "served_batching"):
        results[f"{label}_cpu_overhead_ms_per_call_b1_c1"] = round(
            results[f"{label}_b1_c1"]["cpu_ms_per_call"] - results["in_process_b1_c1"]["cpu_ms_per_call"], 3)
        results[f"{label}_cpu_ratio_b256_c1"] = round(
            results["in_process_b256_c1"]["cpu_ms_per_call"] / results[f"{label}_b256_c1"]["cpu_ms_per_call"], 3)
    for size in batches:
        results[f"grpc_floor_p50_ms_b{size}_c1"] = results[f"grpc_floor_b{size}_c1"]["p50_ms"]
        # The best a Python gRPC server running the model as ufl serve does could reach: model + transport.
        results[f"session_plus_grpc_floor_p50_ms_b{size}_c1"] = round(
            results[f"session_b{size}_c1"]["p50_ms"] + results[f"grpc_floor_b{size}_c1"]["p50_ms"], 3)
        results[f"served_minus_session_and_floor_p50_ms_b{size}_c1"] = round(
            results[f"served_b{size}_c1"]["p50_ms"] - results[f"session_plus_grpc_floor_p50_ms_b{size}_c1"], 3)
    results["served_vs_minimal_server_p50_ms_b1_c1"] = round(
        results["served_b1_c1"]["p50_ms"] - results["minimal_server_b1_c1"]["p50_ms"], 3)
    results["served_vs_minimal_server_cpu_ms_b1_c1"] = round(
        results["served_b1_c1"]["cpu_ms_per_call"] - results["minimal_server_b1_c1"]["cpu_ms_per_call"], 3)
    for size in batches:
        for clients in (1, 8):
            key = f"b{size}_c{clients}"
            results[f"typed_minus_tensor_content_p50_ms_{key}"] = round(
                results[f"served_typed_{key}"]["p50_ms"] - results[f"served_{key}"]["p50_ms"], 3)
            results[f"unix_minus_tcp_p50_ms_{key}"] = round(
                results[f"served_unix_{key}"]["p50_ms"] - results[f"served_{key}"]["p50_ms"], 3)
    results["goal_typed_minus_tensor_content_le_0.2ms_b1"] = results["typed_minus_tensor_content_p50_ms_b1_c1"] <= 0.2
    results["goal_own_handling_le_0.15ms_b1"] = results["served_minus_session_and_floor_p50_ms_b1_c1"] <= 0.15
    results["goal_overhead_le_1ms"] = results["served_overhead_p50_ms_b1_c1"] <= 1.0
    results["goal_throughput_b256_ge_90pct"] = results["served_throughput_ratio_b256_c1"] >= 0.9
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
