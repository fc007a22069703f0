# Two commands do all set-up on a fresh machine: `make train` and `make test`.
# The virtualenv lives outside the clone, so every clone on this machine (and CI's) reuses it.
LLMTRAIN_CACHE ?= $(HOME)/.cache/llmtrain
export LLMTRAIN_CACHE
# Every clone shares the venv; scripts run from this one import this one's llmtrain.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
VENV := $(LLMTRAIN_CACHE)/venv
PY := $(VENV)/bin/python
# Reinstall when setup.py or requirements/ change (so a venv made for an older stack is upgraded, not
# reused), and once per clone (the editable install points at this clone).
REQUIREMENTS := setup.py requirements/no-deps.txt requirements/tested.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQUIREMENTS) | md5sum | cut -c1-12)-$(shell echo $(CURDIR) | md5sum | cut -c1-8)
TOKENIZER := $(LLMTRAIN_CACHE)/tokenizers/EleutherAI/gpt-neox-20b/tokenizer.json
DEMO_DATA := data/tiny/.done
PYTEST_ARGS ?=
# Many tests wait on subprocesses (each pays ~9 s of imports on one core) or on the object store, so two
# pytest workers keep a 2-core machine busy; tests that share session fixtures stay on one worker (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: setup train test data objectstore clean

setup: $(STAMP) $(TOKENIZER)

# Composer and streaming go in with --no-deps: their pins (torch < 2.7.1, numpy < 2.2, ...) are overridden
# there and nowhere else; docs/install.md says why.
$(STAMP): $(REQUIREMENTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/tested.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements/no-deps.txt
	$(PY) -m llmtrain.stack
	@rm -f $(VENV)/.installed-*-$(shell echo $(CURDIR) | md5sum | cut -c1-8)
	@touch $@

$(TOKENIZER): | $(STAMP)
	$(PY) -m llmtrain.data.tokenizer install

# The demo corpus: real text already on this machine (Python's standard library sources and the
# Debian licence texts), tokenized into MDS shards in data/tiny, a local folder acting as the object store.
$(DEMO_DATA): | $(STAMP) $(TOKENIZER)
	$(PY) scripts/make_demo_data.py data/tiny
	@touch $@

data: $(DEMO_DATA)

train: setup $(DEMO_DATA)
	$(PY) scripts/train.py yamls/tiny.yaml $(ARGS)

objectstore:
	bash scripts/objectstore/install.sh

test: setup objectstore
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

clean:
	rm -rf runs data/tiny
