# ufl images, built from the repository root.
#
#   docker build --target train -t ufl .
#   docker run --rm -v "$PWD/work:/work" ufl run --workdir /work           # the whole batch job
#
#   make run                                                              # writes work/models/
#   docker build --target serving -t ufl-serving .                         # or --build-arg MODELS_DIR=...
#   docker run --rm -p 8500:8500 -p 8501:8501 ufl-serving                 # TF-Serving gRPC :8500, REST :8501
#
# MODELS_DIR is a MODELS/ folder written by `ufl export`: model folders NAME/VERSION/ plus
# models.container.config (base paths /models/NAME) and batching.config, which the serving stage starts with.
ARG MODELS_DIR=work/models
# Same release as the tensorflow-serving-api package ufl depends on.
ARG TF_SERVING_VERSION=2.21.0

FROM python:3.11-slim AS train
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /opt/ufl
COPY setup.py README.md ./
COPY ufl/ ufl/
COPY pipeline/ pipeline/
COPY trainers/ trainers/
COPY export/ export/
RUN pip install . && ufl --help > /dev/null
WORKDIR /work
ENTRYPOINT ["ufl"]
CMD ["--help"]

FROM tensorflow/serving:${TF_SERVING_VERSION} AS serving
ARG MODELS_DIR
COPY ${MODELS_DIR}/ /models/
EXPOSE 8500 8501
ENTRYPOINT ["tensorflow_model_server", "--port=8500", "--rest_api_port=8501", "--model_config_file=/models/models.container.config", "--enable_batching=true", "--batching_parameters_file=/models/batching.config"]
