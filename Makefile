# Everything runs inside .venv, created on first use from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
IMAGE ?= dataset-converter:latest
FULL_IMAGE ?= dataset-converter:full

.PHONY: install demo test lint bench docker-build docker-build-full docker-test clean strace browser readers-check

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,tensorflow,remote]'
	touch $@

## Convert the sample that ships in examples/ into out/example (see README).
demo: install
	$(BIN)/dataset-converter convert -a examples/sagemaker_gt -o out/example --split 0.8,0.1,0.1
	$(BIN)/dataset-converter verify out/example

## strace injects kills and disk-full errors in the crash-consistency tests (a Debian package).
strace:
	@command -v strace >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -q strace >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q strace >/dev/null)); } \
		|| echo "strace is not installed: the crash-consistency tests will skip (apt-get install strace)" >&2

## Headless Chromium opens stats/index.html in the statistics page tests (a Debian package).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } \
		|| echo "chromium is not installed: the statistics page tests will skip (apt-get install chromium)" >&2

## The whole test suite, container test included when a Docker engine is reachable.
test: install strace browser
	$(BIN)/ruff check converter tests scripts
	$(BIN)/mypy
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; fi; \
	exit $$status

## Only the third-party readers on converted output (TFDS, Model Garden, Datumaro, fastai; part of `make test`).
## Each is installed on first use into its own venv under .readers/ (about 13 GB and 4 minutes the first time).
readers-check: install
	DATASET_CONVERTER_REQUIRE_READERS=1 $(BIN)/pytest tests/test_reader_*.py tests/test_training_stacks.py

lint: install
	$(BIN)/ruff check converter tests scripts
	$(BIN)/mypy

## Throughput, MB/s and peak RSS against the I/O floor and Datumaro (not a test: prints figures and targets).
## Datumaro is installed on first use into .bench-venv-datumaro/, apart from $(VENV): never a project dependency.
bench: install
	$(BIN)/python scripts/bench.py

## The default image: no TensorFlow, at most 500 MB; `verify` checks records with the built-in parser (docs/container.md).
docker-build:
	docker build --network host -t $(IMAGE) .

## The `full` target: the same plus TensorFlow (verify parses with it) and the `remote` extra (s3://, gs://), about 2 GB.
docker-build-full:
	docker build --network host --target full -t $(FULL_IMAGE) .

docker-test: install
	DATASET_CONVERTER_REQUIRE_DOCKER=1 $(BIN)/pytest -m container

## The sdist and the wheel in dist/, built by `python -m build` in an isolated environment (it fetches
## the [build-system] setuptools); the wheel is built from the sdist, so a file the sdist misses fails here.
.PHONY: dist
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
