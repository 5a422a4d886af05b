# `make demo`: create .venv, install, run the main job offline.  `make test`: run the test suite.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/asvspoof2019_la_mini/LA
DEMO    ?= demo

.PHONY: demo test lint venv clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first with torchvision (test-only), then torchaudio for the same torch: the only combination that
	# exists for torchaudio here.
	$(BIN)/python -m pip install -q torch==2.9.1 torchvision==0.24.1
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python data.py --data-root $(DATA) --check
	$(BIN)/python data.py --data-root $(DATA) --show LA_T_4179989 --out $(DEMO)/LA_T_4179989.png
	@echo "demo outputs in $(DEMO)/"

# pytest exits 5 when it collects nothing: that must fail CI, and it does (any non-zero status fails make).
test: venv
	$(BIN)/python -m pytest test_all.py -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
