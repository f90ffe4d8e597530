"""The Beam pipeline object every ufl job runs on: the user's ``--runner``, else Beam's local FnApiRunner.

Without ``--runner``, Beam's DirectRunner first tries to download the Prism runner's binary from GitHub and
run there: online, ufl's jobs would then run on another runner than the one they are tested on (and
``--direct_num_workers`` / ``--direct_running_mode`` would be ignored); offline, each job waits for the failed
download and leaves an empty ``beam-temp*`` folder in the temp directory. ufl therefore runs local jobs on
the runner the DirectRunner falls back to for batch pipelines, the FnApiRunner, built as the DirectRunner
builds it (the pipeline options reach the worker processes). ``--runner=DirectRunner`` keeps Beam's choice.

Beam 2.77 starts the worker processes of ``--direct_running_mode=multi_processing`` (ufl's default) through a
shell with ``sys.executable`` unquoted: from a clone under a folder with a space ("My Projects/ufl/.venv")
each worker exits with 127 and the job waits for its workers forever. :class:`LocalRunner` quotes it.
"""
from __future__ import annotations

import shlex
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import fn_runner


class LocalRunner(fn_runner.FnApiRunner):
    """Beam's FnApiRunner, with worker processes started by a quoted ``sys.executable``."""

    def run_via_runner_api(self, pipeline_proto, options):
        for environment in pipeline_proto.components.environments.values():
            if environment.urn == python_urns.SUBPROCESS_SDK:
                command = environment.payload.decode("utf-8")
                if command.startswith(sys.executable + " "):
                    command = shlex.quote(sys.executable) + command[len(sys.executable):]
                    environment.payload = command.encode("utf-8")
        return super().run_via_runner_api(pipeline_proto, options)


def local_runner(options: PipelineOptions) -> LocalRunner:
    """Beam's FnApiRunner with ``options`` in its provision info, as the DirectRunner makes it."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return LocalRunner(provision_info=info)


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A ``beam.Pipeline`` on ``options``: on the user's runner if they named one, else on :func:`local_runner`."""
    if options.view_as(StandardOptions).runner:
        return beam.Pipeline(options=options)
    return beam.Pipeline(runner=local_runner(options), options=options)
