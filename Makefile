# `make demo`: create .venv, install, run the main job offline.  `make test`: run the test suite (all of it).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DATA    ?= demo_data/LA
RUN     ?= runs/demo
DEMO    ?= demo

.PHONY: demo test test-fast lint venv clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first with torchvision (test-only), then torchaudio for the same torch: the only combination that
	# exists for torchaudio here.
	$(BIN)/python -m pip install -q torch==2.9.1 torchvision==0.24.1
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# The main job, offline, on the embedded real demo set (demo_data/, 222 ASVspoof 2019 LA files; DATA=... for another
# tree): check it, draw one item, train the tiny recipe (about a minute on 2 CPU cores), score the dev split (score
# file, EER, min t-DCF, per-attack table, DET plot), explain LA_T_4179989.
demo: venv
	$(BIN)/python data.py --data-root $(DATA) --check
	$(BIN)/python data.py --data-root $(DATA) --show LA_T_4179989 --out $(DEMO)/LA_T_4179989.png
	rm -rf $(RUN) $(DEMO)/explain
	$(BIN)/python train.py --data-root $(DATA) --recipe tiny --out $(RUN)
	$(BIN)/python evaluate.py --ckpt $(RUN)/best.pt --data-root $(DATA) --split dev --out $(DEMO)/scores_dev.txt
	# the short form: the newest runs/*/best.pt (the one just trained) and the tree it was trained on
	$(BIN)/python explain.py --utt LA_T_4179989 --out $(DEMO)/explain
	@echo "demo outputs: $(RUN)/ (checkpoints, curves.png), $(DEMO)/: LA_T_4179989.png, scores_dev.txt, scores_dev_det.png, explain/"

# pytest exits 5 when it collects nothing: that must fail CI, and it does (any non-zero status fails make).
# `make test` runs every test, the slow ones (@pytest.mark.slow, over ~20 s each) included; `make test-fast` skips them.
test: venv
	$(BIN)/python -m pytest test_all.py -q

test-fast: venv
	$(BIN)/python -m pytest test_all.py -q -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
