"""Prometheus metrics of ``ufl serve`` under TF-Serving's names (``--monitoring_config_file``).

``tensorflow_model_server`` exports its TensorFlow monitoring metrics as Prometheus text on the REST port
when its MonitoringConfig says ``prometheus_config { enable: true path: "..." }``; a metric
``/tensorflow/serving/request_count`` is written ``:tensorflow:serving:request_count``. ufl serve keeps
those names, labels and units (latencies in microseconds, in TF-Serving's exponential buckets), so the
dashboards and alerts of a TF-Serving deployment read it unchanged:

  :tensorflow:serving:request_count{model_name, status}                 counter
  :tensorflow:serving:request_latency{model_name, API, entrypoint}       histogram, us (GRPC or REST)
  :tensorflow:serving:runtime_latency{model_name, API, runtime}          histogram, us (the model's run)
  :tensorflow:serving:batching_session:queuing_latency{thread_pool_name} histogram, us (with batching)
  :tensorflow:serving:batching_session:input_batch_size{model_name}      histogram, rows per batch
  :tensorflow:serving:batching_session:processed_batch_size{model_name}  histogram, rows after padding
  :tensorflow:cc:saved_model:load_attempt_count{model_path, status}      counter (success / fail)
  :tensorflow:cc:saved_model:load_latency{model_path}                    counter, us
  :tensorflow:serving:model_warmup_latency{model_path, status}           histogram, us
  :ufl:serving:model_version_state{model_name, version, state}           gauge, 1 per known version (ufl's own)
"""
from __future__ import annotations

import bisect
import re
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ufl.config import ConfigError

#: TF-Serving's default page of the Prometheus metrics.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
#: TensorFlow's Buckets::Exponential(10, 1.8, 33): 10 us to ~20 minutes.
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** index for index in range(33))
BATCH_SIZE_BUCKETS = tuple(2 ** index for index in range(17))
BATCH_THREAD_POOL = "batch_threads"


class _Histogram:
    """Cumulative-bucket histogram per label values (kept here rather than in prometheus_client so that
    metric names are exactly TF-Serving's)."""

    def __init__(self, name: str, documentation: str, labels: Tuple[str, ...], buckets: Tuple[float, ...]):
        self.name, self.documentation, self.labels, self.buckets = name, documentation, labels, buckets
        self._series: Dict[tuple, list] = {}

    def observe(self, label_values: tuple, value: float) -> None:
        series = self._series.get(label_values)
        if series is None:
            series = self._series[label_values] = [[0] * (len(self.buckets) + 1), 0.0, 0]
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1] += value
        series[2] += 1

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, "histogram")
        for label_values, (counts, total, count) in sorted(self._series.items()):
            labels = dict(zip(self.labels, label_values))
            cumulative = 0
            for bound, bucket_count in zip(self.buckets + (float("inf"),), counts):
                cumulative += bucket_count
                le = "+Inf" if bound == float("inf") else repr(round(bound, 6))
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(self.name + "_sum", labels, total)
            metric.add_sample(self.name + "_count", labels, count)
        return metric


class _Counter:
    def __init__(self, name: str, documentation: str, labels: Tuple[str, ...]):
        self.name, self.documentation, self.labels = name, documentation, labels
        self._values: Dict[tuple, float] = {}

    def add(self, label_values: tuple, amount: float = 1.0) -> None:
        self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, "counter")
        for label_values, value in sorted(self._values.items()):
            metric.add_sample(self.name, dict(zip(self.labels, label_values)), value)
        return metric


class ServingMetrics:
    """What a server records while it runs; :meth:`render` gives the Prometheus text page.

    Args:
      version_states: returns ``(model name, version, state name)`` of every known version, read at
        each scrape.
    """

    def __init__(self, version_states: Optional[Callable[[], Iterable[Tuple[str, int, str]]]] = None):
        self.version_states = version_states
        self._lock = threading.Lock()
        serving = ":tensorflow:serving:"
        self._request_count = _Counter(serving + "request_count", "The total number of requests.",
                                       ("model_name", "status"))
        self._request_latency = _Histogram(
            serving + "request_latency", "Distribution of wall time (in microseconds) for Tensorflow Serving "
            "request.", ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
        self._runtime_latency = _Histogram(
            serving + "runtime_latency", "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"), LATENCY_BUCKETS_US)
        self._queuing_latency = _Histogram(
            serving + "batching_session:queuing_latency", "Distribution of wall time spent (in microseconds) "
            "in queuing", ("thread_pool_name",), LATENCY_BUCKETS_US)
        self._input_batch_size = _Histogram(serving + "batching_session:input_batch_size",
                                            "Rows of the requests in each batch.", ("model_name",),
                                            BATCH_SIZE_BUCKETS)
        self._processed_batch_size = _Histogram(serving + "batching_session:processed_batch_size",
                                                "Rows of each batch run, after padding.", ("model_name",),
                                                BATCH_SIZE_BUCKETS)
        self._load_attempts = _Counter(":tensorflow:cc:saved_model:load_attempt_count",
                                       "The number of times a SavedModel was successfully loaded.",
                                       ("model_path", "status"))
        self._load_latency = _Counter(":tensorflow:cc:saved_model:load_latency",
                                      "Latency in microseconds for SavedModels that were successfully loaded.",
                                      ("model_path",))
        self._warmup_latency = _Histogram(serving + "model_warmup_latency", "Distribution of wall time (in "
                                          "microseconds) for warming up the model.", ("model_path", "status"),
                                          LATENCY_BUCKETS_US)
        self._series = (self._request_count, self._request_latency, self._runtime_latency, self._queuing_latency,
                        self._input_batch_size, self._processed_batch_size, self._load_attempts,
                        self._load_latency, self._warmup_latency)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One finished request: ``api`` ``predict`` / ``GetModelMetadata`` ..., ``entrypoint`` GRPC / REST."""
        with self._lock:
            self._request_count.add((model_name, status))
            self._request_latency.observe((model_name, api, entrypoint), seconds * 1e6)

    def runtime(self, model_name: str, api: str, seconds: float) -> None:
        with self._lock:
            self._runtime_latency.observe((model_name, api, "TF1"), seconds * 1e6)

    def batch_queued(self, seconds: float) -> None:
        with self._lock:
            self._queuing_latency.observe((BATCH_THREAD_POOL,), seconds * 1e6)

    def batch_run(self, model_name: str, rows: int, padded_rows: int) -> None:
        with self._lock:
            self._input_batch_size.observe((model_name,), rows)
            self._processed_batch_size.observe((model_name,), padded_rows)

    def load(self, model_path: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self._load_attempts.add((model_path, "success" if ok else "fail"))
            if ok:
                self._load_latency.add((model_path,), seconds * 1e6)

    def warmup(self, model_path: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self._warmup_latency.observe((model_path, "OK" if ok else "ERROR"), seconds * 1e6)

    def collect(self) -> List[Metric]:
        """prometheus_client's collector interface."""
        with self._lock:
            metrics = [series.metric() for series in self._series]
        states = Metric(":ufl:serving:model_version_state", "1 for each known model version, labelled with "
                        "its state (as GetModelStatus reports it).", "gauge")
        for name, version, state in (self.version_states() if self.version_states else ()):
            states.add_sample(states.name, {"model_name": name, "version": str(version), "state": state}, 1)
        return metrics + [states]

    def render(self) -> bytes:
        """The Prometheus text exposition, with counters typed under their own names as TF-Serving writes
        them (prometheus_client would name a counter family ``NAME_total``)."""
        text = generate_latest(self._registry).decode("utf-8")
        return re.sub(r"^# (HELP|TYPE) (\S+)_total ", r"# \1 \2 ", text, flags=re.MULTILINE).encode("utf-8")


def _monitoring_config_class():
    """TF-Serving's MonitoringConfig message (not shipped by tensorflow-serving-api)."""
    file = descriptor_pb2.FileDescriptorProto(name="ufl/monitoring_config.proto", package="tensorflow.serving",
                                              syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_STRING)
    config = file.message_type.add(name="MonitoringConfig")
    config.field.add(name="prometheus_config", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                     type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def read_monitoring_config(path: str) -> Optional[str]:
    """The Prometheus page path of a MonitoringConfig text proto file; None when Prometheus is not enabled.

    Raises:
      ConfigError: the file is missing or is not a MonitoringConfig text proto.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"monitoring_config_file {path!r} cannot be read ({error.strerror}); write "
                          'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" } to it')
    config = _monitoring_config_class()()
    try:
        text_format.Parse(text, config, allow_unknown_field=True)
    except text_format.ParseError as error:
        raise ConfigError(f"monitoring_config_file {path!r} is not a MonitoringConfig text proto: {error}")
    if not config.prometheus_config.enable:
        return None
    page = config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if not page.startswith("/"):
        raise ConfigError(f"monitoring_config_file {path!r}: prometheus_config path {page!r} must start with '/'")
    return page
