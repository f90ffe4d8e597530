"""The Dockerfile (Docker itself is not available here): stages, COPY sources, and the serving command's flags.

The serving stage must start from what `ufl export` writes in MODELS/ (models.container.config,
batching.config) at the place `make run` writes it (work/models), with flags ufl serve also accepts.
"""
import argparse
import json
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_dockerfile(path):
    """(global ARG defaults, [stage dicts with name, base, instructions [(KEYWORD, text)]])."""
    with open(path, encoding="utf-8") as handle:
        text = re.sub(r"\\\n", " ", handle.read())
    global_args, stages = {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            stages.append({"base": match[1], "name": match[2], "instructions": []})
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1]["instructions"].append((keyword, rest))
    return global_args, stages


def expand(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda match: args[match[1] or match[2]], text)


def copy_sources(stage, args):
    sources = []
    for keyword, rest in stage["instructions"]:
        if keyword == "COPY":
            parts = [part for part in shlex.split(rest) if not part.startswith("--")]
            sources += [expand(source, args) for source in parts[:-1]]
    return sources


def exec_form(stage, keyword):
    (value,) = [rest for key, rest in stage["instructions"] if key == keyword]
    return json.loads(value)


@pytest.fixture(scope="module")
def dockerfile():
    global_args, stages = parse_dockerfile(os.path.join(REPO, "Dockerfile"))
    return global_args, {stage["name"]: stage for stage in stages}


def test_train_stage_installs_every_package_folder_of_setup_py(dockerfile):
    global_args, stages = dockerfile
    assert list(stages) == ["train", "serving"]
    train = stages["train"]
    assert train["base"] == "python:3.11-slim"
    assert exec_form(train, "ENTRYPOINT") == ["ufl"]
    assert any(keyword == "RUN" and re.search(r"pip install \.(\s|$)", rest) for keyword, rest in train["instructions"])
    sources = copy_sources(train, global_args)
    missing = [source for source in sources if not os.path.exists(os.path.join(REPO, source))]
    assert not missing, f"COPY sources missing from the repository: {missing}"
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as handle:
        package_dirs = set(re.findall(r'"ufl[\w.]*":\s*"(\w+)"', handle.read()))
    copied = {source.rstrip("/") for source in sources}
    assert package_dirs and package_dirs | {"setup.py", "README.md"} <= copied


def test_serving_stage_matches_the_tensorflow_serving_api_release(dockerfile):
    from importlib.metadata import version

    global_args, stages = dockerfile
    assert stages["serving"]["base"].startswith("tensorflow/serving:")
    image_version = expand(stages["serving"]["base"], global_args).split(":")[1]
    assert image_version.split(".")[:2] == version("tensorflow-serving-api").split(".")[:2]


def test_models_dir_default_is_where_make_run_writes_models(dockerfile):
    global_args, _ = dockerfile
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as handle:
        workdir = re.search(r"^WORKDIR\s*\?=\s*(\S+)", handle.read(), flags=re.MULTILINE)[1]
    assert global_args["MODELS_DIR"] == f"{workdir}/models"


@pytest.mark.slow
def test_serving_command_starts_from_the_files_ufl_export_writes(dockerfile, tmp_path):
    """Builds a context with MODELS_DIR as `ufl export` leaves it, then checks COPY and every /models/ flag."""
    import tensorflow as tf
    from tensorflow_serving.config import model_server_config_pb2
    from google.protobuf import text_format

    from ufl.commands import serve
    from ufl.export.saved_model import CONTAINER_CONFIG_FILE, CONTAINER_MODEL_ROOT, write_server_configs
    from ufl.export.signatures import BATCHING_CONFIG_FILE

    global_args, stages = dockerfile
    serving = stages["serving"]
    context = tmp_path / "context"
    models = context / global_args["MODELS_DIR"]
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.serve = tf.function(lambda patches: {"codes": patches * module.scale},
                               input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    tf.saved_model.save(module, str(models / "patches" / "1"), signatures={"serving_default": module.serve})
    write_server_configs(str(models))

    (source,) = copy_sources(serving, {**global_args})
    assert (context / source).is_dir()
    (destination,) = [shlex.split(rest)[-1] for keyword, rest in serving["instructions"] if keyword == "COPY"]
    assert destination.rstrip("/") == "/models"

    command = exec_form(serving, "ENTRYPOINT")
    assert command[0] == "tensorflow_model_server"
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    flags, unknown = parser.parse_known_args(["serve"] + command[1:])
    assert not unknown, f"flags ufl serve does not know: {unknown}"
    assert flags.enable_batching and (flags.port, flags.rest_api_port) == (8500, 8501)

    def in_image(path):
        assert path.startswith("/models/"), path
        return models / path[len("/models/"):]

    config_path = in_image(flags.model_config_file)
    assert config_path.name == CONTAINER_CONFIG_FILE and config_path.is_file()
    batching_path = in_image(flags.batching_parameters_file)
    assert batching_path.name == BATCHING_CONFIG_FILE and batching_path.is_file()
    assert CONTAINER_MODEL_ROOT == "/models"
    config = text_format.Parse(config_path.read_text(), model_server_config_pb2.ModelServerConfig())
    assert [entry.name for entry in config.model_config_list.config] == ["patches"]
    for entry in config.model_config_list.config:
        assert (in_image(entry.base_path) / "1" / "saved_model.pb").is_file()
    exposed = [rest for keyword, rest in serving["instructions"] if keyword == "EXPOSE"]
    assert exposed and set(exposed[0].split()) == {"8500", "8501"}
