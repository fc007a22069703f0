# Two commands do all set-up on a fresh machine: `make train` and `make test`.
# The virtualenv lives outside the clone, so every clone on this machine (and CI's) reuses it.
LLMTRAIN_CACHE ?= $(HOME)/.cache/llmtrain
export LLMTRAIN_CACHE
# Every clone shares the venv; scripts run from this one import this one's llmtrain.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
VENV := $(LLMTRAIN_CACHE)/venv
PY := $(VENV)/bin/python
# Reinstall when setup.py changes, and once per clone (the editable install points at this clone).
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)-$(shell echo $(CURDIR) | md5sum | cut -c1-8)
TOKENIZER := $(LLMTRAIN_CACHE)/tokenizers/EleutherAI/gpt-neox-20b/tokenizer.json
DEMO_DATA := data/tiny/.done
PYTEST_ARGS ?=

.PHONY: setup train test data objectstore clean

setup: $(STAMP) $(TOKENIZER)

$(STAMP): setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs data/tiny
