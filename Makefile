# tagstore — two commands: `make demo` and `make test`. Everything they need is installed here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := torch,corpus,server,test,ray

.PHONY: venv weights test demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

# The musicnn wheel from PyPI (when reachable) lets a test read the real checkpoints; tests never download.
MUSICNN_WHEEL := .cache/musicnn-0.1.0-py3-none-any.whl

$(MUSICNN_WHEEL):
	-$(BIN)/python -m pip download --quiet --no-deps musicnn==0.1.0 -d .cache

# The aisfx wheel likewise: its checkpoint and its own network and front end, which tests run as references.
AISFX_WHEEL := .cache/aisfx-0.1.2-py2.py3-none-any.whl

$(AISFX_WHEEL):
	-$(BIN)/python -m pip download --quiet --no-deps aisfx==0.1.2 -d .cache

weights: venv
	$(BIN)/tagstore models fetch musicnn

# The web page's browser tests drive Debian's Chromium (Playwright cannot download its own browsers here);
# without it they skip with a reason.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	-command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: venv $(MUSICNN_WHEEL) $(AISFX_WHEEL) $(CHROMIUM)
	TAGSTORE_MUSICNN_WHEEL=$(CURDIR)/$(MUSICNN_WHEEL) TAGSTORE_AISFX_WHEEL=$(CURDIR)/$(AISFX_WHEEL) $(BIN)/python -m pytest -q

demo: weights
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

clean:
	rm -rf $(VENV) build dist *.egg-info demo-out .cache
