# dataset-converter: an annotation export mounted at /data_in -> TFRecord shards,
# dataset_info.yaml and report.json in /data_out.
#
#   docker build --network host -t dataset-converter .                          (the small image, the default)
#   docker build --network host --target full -t dataset-converter:full .       (the same, plus TensorFlow)
#   docker run --rm --network none --user "$(id -u):$(id -g)" \
#       -v "$PWD/export:/data_in:ro" -v "$PWD/out:/data_out" dataset-converter [options]
#
# (--network host only where the engine has no bridge.) The converter needs no network and
# only reads /data_in. It runs as the unprivileged uid 10001 unless told otherwise:
# --user "$(id -u):$(id -g)" lets it write into an output folder you own (or one Docker
# created as root for a missing mount source) and makes the files yours.
# Other commands: `verify /data_out`, `version`, `--help`.
#
# Two variants, because TensorFlow alone is 1.3 GB and only `verify` would use it:
# - the default (last stage, `small`) has no TensorFlow: `convert` never imports it, and
#   `verify` checks every record's framing, CRCs and tf.train.Example structure with the
#   converter's own decoder (converter/formats/example_proto.py);
# - `--target full` adds TensorFlow, and `verify` parses every record with it, the reference
#   reader; and the `remote` extra (s3:// and gs:// paths), which does not fit in the small one.
# DATASET_CONVERTER_IMAGE_VARIANT says which (small or full); they share every layer up to the
# extras. BuildKit builds only the stages a target needs; the classic builder (Docker before
# 23 without buildx) also builds `full` on the way to the default, and caches it.

# The wheel is built in a throw-away stage, so the source tree and the build-time
# setuptools never reach the final image.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# What both variants hold: the user, the data folders, and the dependencies.
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --gid 10001 converter \
    && useradd --uid 10001 --gid converter --create-home --shell /usr/sbin/nologin converter \
    && mkdir /data_in /data_out \
    && chown converter:converter /data_out

# The core dependencies get a layer of their own, cached across code changes. Their ranges
# are read from pyproject.toml so they live in one place. --no-compile: their bytecode would
# be 46 MB more, and with it the small image would not fit in 500 MB; Python compiles what it
# imports in memory instead (about a second per run, PYTHONDONTWRITEBYTECODE keeps it there).
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; print(*tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir --no-compile -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

# The CLI defaults to these already; stated here so `docker inspect` shows the contract.
ENV DATASET_CONVERTER_ANNOTATIONS=/data_in \
    DATASET_CONVERTER_OUTPUT=/data_out

ENTRYPOINT ["dataset-converter"]
CMD ["convert"]

# `--target full`: the `remote` extra (s3fs, gcsfs: -a, -i and -o may be s3:// or gs://
# URLs where nothing is mounted; 80 MB, too much for the small image) and the `tensorflow`
# extra, which is tensorflow-cpu>=2.16,<2.22 on linux x86_64 (tensorflow of the same range on
# arm64, which has no tensorflow-cpu wheels), in a layer of their own. pip keeps the
# dependencies already installed where they fit.
FROM runtime AS full

# TF_ENABLE_ONEDNN_OPTS=0: TensorFlow only parses records here, and with oneDNN on it prints a
# notice on every import that TF_CPP_MIN_LOG_LEVEL does not silence, breaking JSON-lines logs.
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    DATASET_CONVERTER_IMAGE_VARIANT=full

COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; extras = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["optional-dependencies"]; print(*extras["remote"], *extras["tensorflow"], sep="\n")' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001

# The default: no TensorFlow.
FROM runtime AS small

ENV DATASET_CONVERTER_IMAGE_VARIANT=small

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
