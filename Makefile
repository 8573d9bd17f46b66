# kdlab — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

# torch and torchvision are pinned and installed first, as a pair that import together: timm
# needs torchvision, and a bare `torch` requirement could pull any build (README, "Install").
# The package and its test extras (timm, transformers, onnx, ...) come after, against that torch.
TORCH := torch==2.14.1 torchvision==0.29.1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/kdlab run digits

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q

# The benchmarks' own extra (Keras 3, the reference of benchmarks.lab224), never needed by `make test`.
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.allocator
	$(BIN)/python -m benchmarks.lab224

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
