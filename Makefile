# voxtral-rt: two commands do everything on a fresh machine:
#   make demo   set up, export the embedded model, build the runner, transcribe a bundled clip
#   make test   set up, build, run every test
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
BUILD ?= build/release
DEB_PKGS := libgflags-dev nlohmann-json3-dev libsndfile1-dev libsoxr-dev espeak-ng flite sox
ART   ?= artifacts

.PHONY: setup deps-debian runner runner-asan runner-tsan test test-python demo clean test-asan test-tsan fuzz fuzz-build deps-fuzz

setup: $(VENV)/.stamp deps-debian

# torch first, pinned: the local CPU build; an unpinned resolve would fetch CUDA wheels.
$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

# C++ dependencies come from Debian; install only what is missing (needs root or sudo).
deps-debian:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

runner: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --preset release >/dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build --preset release -j2

runner-asan: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --preset asan >/dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build --preset asan -j2

# The runner's C++ tests and CLI runs under ASan+UBSan (leak checks on); part of `make test`.
test-asan: runner-asan
	$(PY) -m pytest -q tests/python/test_runner_asan.py

# ThreadSanitizer: only the two binaries its test runs (the public-API test and the CLI); part of `make test`.
runner-tsan: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --preset tsan >/dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build --preset tsan -j2 --target voxtral_rt_pte_tests voxtral_realtime_runner

test-tsan: runner-tsan
	$(PY) -m pytest -q tests/python/test_runner_tsan.py

# libFuzzer targets (fuzz/): clang from Debian. `make fuzz FUZZ_SECONDS=600` runs each target that long.
FUZZ_SECONDS ?= 60
FUZZ_DEB_PKGS := clang libclang-rt-14-dev
deps-fuzz:
	@$(MAKE) --no-print-directory deps-debian DEB_PKGS="$(FUZZ_DEB_PKGS)"

fuzz-build: setup deps-fuzz
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake -S fuzz -B fuzz/build -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake --build fuzz/build -j2

fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_SECONDS)

# The Python suite runs on pytest-xdist workers (one per core by default): exports are single-threaded, and the
# tiny models every file shares are exported once per run (tests/python/conftest.py, build_once).
TEST_WORKERS ?= auto
test-python: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test: setup runner runner-asan runner-tsan fuzz-build
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The embedded demo model (models/demo: a tiny Voxtral-architecture model trained by tools/train_demo.py on
# synthetic speech, see README "Demo model"): export it as an 8da4w .pte, build the runner, and stream each bundled
# held-out clip (samples/voices.tsv says how it was made) through it in 80 ms chunks.
# The same with the real checkpoint (a directory with params.json, consolidated.safetensors, tekken.json):
#   make demo MODEL=/path/to/Voxtral-Mini-4B-Realtime-2602
MODEL ?= models/demo
SAMPLES ?= models/demo/samples
DEMO_PTE := $(ART)/$(notdir $(abspath $(MODEL)))_8da4w.pte
demo: runner $(DEMO_PTE)
	@echo "model: $(MODEL) -> $(DEMO_PTE) (8da4w linears + 8-bit embedding), C++ runner streaming in 80 ms chunks"
	@for wav in $(SAMPLES)/*.wav; do \
	  n=$$(basename $$wav .wav); \
	  src=$$(awk -F'\t' -v n=$$n '$$1 == n {print $$3}' $(SAMPLES)/voices.tsv 2>/dev/null); \
	  echo; echo "$$wav  ($${src:-?})"; \
	  echo "  reference:  $$(cat $(SAMPLES)/$$n.txt)"; \
	  printf "  transcript:"; \
	  runner/build/voxtral_realtime_runner --model_path $(DEMO_PTE) --tokenizer_path $(MODEL)/tekken.json \
	      --audio_path $$wav --streaming --chunk_ms 80 2>/dev/null || exit 1; \
	done
	@echo; echo "stats for the last clip:"
	@runner/build/voxtral_realtime_runner --model_path $(DEMO_PTE) --tokenizer_path $(MODEL)/tekken.json \
	    --audio_path $$(ls $(SAMPLES)/*.wav | tail -1) --streaming --chunk_ms 80 --stats >/dev/null

# Re-exported when the model or the export code changes (an old .pte may have an older format_version).
$(DEMO_PTE): $(wildcard $(MODEL)/*.safetensors) $(MODEL)/params.json export/export_voxtral_rt.py \
		voxtral_rt/model.py voxtral_rt/mel.py voxtral_rt/pte.py $(wildcard voxtral_rt/export/*.py) | setup
	@mkdir -p $(ART)
	$(PY) export/export_voxtral_rt.py --model-path $(MODEL) --output $@ \
	    --qlinear 8da4w --qlinear-encoder 8da4w --qembedding 8w

clean:
	rm -rf build $(ART)
