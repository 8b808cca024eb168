# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORE_CATALOGUE := layers/common/python/comfyfleet/data/object_info_core.json

.PHONY: install browser test lint demo bench synth clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml fakecomfy/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "comfyfleet needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# fakecomfy (the stand-in ComfyUI) is a distribution of its own, kept out of the agent's wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,agent,cdk,cli]' -e ./fakecomfy
	@touch $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The console's browser tests drive Debian's Chromium (Playwright's own download is not an
# option offline): installed here when missing, as root or with sudo.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES); \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES); \
	else \
		echo "note: the browser tests need Debian's $(BROWSER_PACKAGES) (apt-get install); skipped without them"; \
	fi

test: lint browser
	$(BIN)/pytest

demo: $(INSTALLED)
	@mkdir -p out
	@echo "== validate examples/hello.json against ComfyUI's core nodes"
	$(BIN)/comfyfleet validate examples/hello.json --catalogue core
	@for name in sd15 sdxl flux; do \
		echo "== template $$name -> out/$$name.json, validated"; \
		$(BIN)/comfyfleet template $$name --prompt "a lighthouse on a cliff at dusk" --seed 42 \
			> out/$$name.json || exit 1; \
		$(BIN)/comfyfleet validate out/$$name.json --catalogue core > out/$$name.validation.json \
			|| { cat out/$$name.validation.json; exit 1; }; \
		$(BIN)/python -c "import json,sys; r=json.load(open(sys.argv[1])); \
			print('   ok:', r['ok'], '| models:', ', '.join(m['folder'] + '/' + m['filename'] for m in r['models']))" \
			out/$$name.validation.json; \
	done
	@echo "== the whole system on this machine (comfyfleet dev): two jobs, their images in out/"
	$(BIN)/python -m comfyfleet.dev.demo --out out

bench: $(INSTALLED)
	$(BIN)/python -m bench

# The CloudFormation template into cdk.out/, offline (no AWS credentials, no Docker); the
# cdk command itself: `npx aws-cdk@^2 deploy` (README, "Deploying to AWS").
synth: $(INSTALLED)
	$(BIN)/python cdk/app.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out cdk.out .comfyfleet
