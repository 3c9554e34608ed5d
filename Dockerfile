# dataset-converter: a Ground Truth export mounted at /data_in -> TFRecord shards,
# dataset_info.yaml and report.json in /data_out.
#
#   docker build --network host -t dataset-converter .   (--network host only where the engine has no bridge)
#   docker run --rm --network none --user "$(id -u):$(id -g)" \
#       -v "$PWD/export:/data_in:ro" -v "$PWD/out:/data_out" dataset-converter [options]
#
# The converter needs no network and only reads /data_in. It runs as the unprivileged uid
# 10001 unless told otherwise: --user "$(id -u):$(id -g)" lets it write into an output folder
# you own (or one Docker created as root for a missing mount source) and makes the files yours.
# Other commands: `verify /data_out`, `version`, `--help`.

# The wheel is built in a throw-away stage, so the source tree and the build-time
# setuptools never reach the final image.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

# TF_ENABLE_ONEDNN_OPTS=0: TensorFlow only parses records here, and with oneDNN on it prints a
# notice on every import that TF_CPP_MIN_LOG_LEVEL does not silence, breaking JSON-lines logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --gid 10001 converter \
    && useradd --uid 10001 --gid converter --create-home --shell /usr/sbin/nologin converter \
    && mkdir /data_in /data_out \
    && chown converter:converter /data_out

# Dependencies get a layer of their own, cached across code changes (TensorFlow alone is
# hundreds of MB). Their ranges are read from pyproject.toml so they live in one place: the
# core dependencies plus the `tensorflow` extra, which is tensorflow-cpu>=2.16,<2.22 on
# linux x86_64 (tensorflow of the same range on arm64, which has no tensorflow-cpu wheels).
# TensorFlow is the reference reader: `verify` parses every record with it; `convert` never imports it.
# The `remote` extra (s3fs, gcsfs) lets -a, -i and -o be s3:// or gs:// URLs where nothing is mounted.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; project = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; print(*project["dependencies"], *project["optional-dependencies"]["tensorflow"], *project["optional-dependencies"]["remote"], sep="\n")' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels

# The CLI defaults to these already; stated here so `docker inspect` shows the contract.
ENV DATASET_CONVERTER_ANNOTATIONS=/data_in \
    DATASET_CONVERTER_OUTPUT=/data_out

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["dataset-converter"]
CMD ["convert"]
