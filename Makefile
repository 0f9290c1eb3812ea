# `make repro` and `make test` each set up .venv from requirements.lock first
# (once; again only when the lock or pyproject.toml change).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: repro preflight pull test test-fast bench time-repro gpu-check sshd

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

# Every model and dataset the active profile loads, checked before any stage runs (exit 2 names what is missing).
preflight: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python stages/preflight.py

repro: preflight
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

# The shared outputs from the default DVC remote, after checking in seconds that it answers and holds a cache
# (`dvc pull` alone waits minutes on a host that does not answer, then says that everything is up to date).
pull: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python stages/preflight.py --remote
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc pull --allow-missing

# The remote-storage tests run a real OpenSSH server on loopback; install it from Debian's packages where
# this machine allows (root with apt), otherwise that one test skips and says why.
sshd:
	@[ -x /usr/sbin/sshd ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q openssh-server >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server >/dev/null 2>&1; }; }; } || \
	  echo "openssh-server not installed: the SSH remote test will be skipped"

test: $(STAMP) sshd
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" pytest

# The tier a developer runs in minutes: everything but the end-to-end modules (`slow`: they train or run dvc repro).
test-fast: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" pytest -m "not slow"

# Speed and memory, measured side by side (not gates): writes .benchmarks/, docs/scale.md, docs/throughput.md
# and docs/checkpoint_selection.md.
bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" pytest -m bench tests/benchmarks --benchmark-group-by=group --benchmark-autosave

# Every stage of a full `dvc repro --force`, timed, into docs/timings.md (about as long as `make repro`).
time-repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python tests/benchmarks/stage_times.py --label "full repro" -- dvc repro --force

# The seed profile's GPU path on the hub twins at reduced sizes, in minutes: what ran, peak GPU memory against the
# preflight's estimate, the tolerance table (tests/benchmarks/gpu_check.py; on a CPU the same runs without bf16).
gpu-check: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" python tests/benchmarks/gpu_check.py
