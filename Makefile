# Two commands do everything on a fresh machine (each creates .venv when missing):
#   make demo   - install, then run the whole Kubeflow pipeline locally on the built-in demo (no hub, no GPU,
#                 no cluster): prepare, train, evaluate, export
#   make test   - install, then lint (ruff, import-linter layer contracts) and run the whole test suite (CI's command)
#   make test-fast - the unit tier only (no test marked slow or integration): minutes, to run between edits
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: demo test test-fast lint install compile image clean constraints test-lower

install: $(STAMP)

# Exact versions from constraints.txt (pyproject.toml keeps ranges). torch and torchvision are installed first,
# so that nothing later pulls a different multi-GB build. nvidia-pytriton (a test dependency: the real tritonserver
# binary it carries serves the Triton export in tests/support/tritonserver.py) comes without its dependencies: its
# metadata caps numpy below 2, and the tests use only its binary, not its Python package.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps -c constraints.txt nvidia-pytriton
	touch $(STAMP)

# Refresh constraints.txt after changing a dependency in pyproject.toml: a fresh venv resolves the ranges, and
# its versions become the new constraints (docs/install.md, "Pinned versions").
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q $$(grep -E '^(torch|torchvision)==' constraints.txt)
	.venv-constraints/bin/python -m pip install -q -e '.[dev]'
	.venv-constraints/bin/python -m pip install -q --no-deps nvidia-pytriton
	{ sed -n '/^#/p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-constraints

# The lower ends of pyproject.toml's ranges, in a separate venv (.ci/test-lower; docs/install.md, "Tested versions").
test-lower:
	.ci/test-lower

demo: $(STAMP)
	$(VENV)/bin/asymvae pipeline run-local

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The console script, not `python -m pytest`: nothing puts the checkout on sys.path, so the tests import
# asymvae, asymvae_components and asymvae_pipelines as installed.
test: lint
	$(VENV)/bin/pytest

# The unit tier: pure logic, in-process; tests/conftest.py marks every test that uses a runtime fixture `integration`.
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not slow and not integration"

# Regenerate the committed pipeline and component YAML (tests fail while they are stale).
compile: $(STAMP)
	$(VENV)/bin/asymvae pipeline compile --out pipelines/asymvae_pipeline.yaml --components components

# Build the image every pipeline step and training pod runs (docs/cluster.md, "The image") with podman or docker;
# build arguments and secrets go in ARGS, e.g. ARGS="--build-arg LPIPS_WEIGHTS=none".
IMAGE ?= asymvae:0.1.0
ENGINE ?= $(shell command -v podman || command -v docker)
image:
	$(ENGINE) build -f docker/Dockerfile -t $(IMAGE) $(ARGS) .

clean:
	rm -rf work_dirs .pytest_cache
