# Keyward. `make run` and `make test` do all the set-up themselves.
SHELL := bash
CP := scripts/control-plane.sh
TEST_CP_DIR := $(CURDIR)/.keyward/test-control-plane
BENCH_CP_DIR := $(CURDIR)/.keyward/bench-control-plane

.PHONY: run stop test unit crds bench lint control-plane plugin

## run: the controller against the current kube context (or a local control plane)
run:
	scripts/run.sh $(ARGS)

## stop: stop the local control plane that `make run` started (Ctrl-C stops Keyward itself)
stop:
	$(CP) stop

## test: every test, unit and on a fresh real API server
test:
	$(CP) install
	scripts/python-clients.sh >/dev/null
	cargo build --tests --bins
	$(CP) with $(TEST_CP_DIR) -- cargo test --no-fail-fast

## unit: the tests that need no API server
unit:
	cargo test --lib

## crds: regenerate crds/ (and the chart's copy) from the types
crds:
	cargo run --quiet --bin keyward -- crd > crds/keyward.io.yaml
	cp crds/keyward.io.yaml charts/keyward/crds/keyward.io.yaml

## bench: the figures of the issues, each bench on a fresh local control plane
bench:
	$(CP) install
	cargo build --release --bins --benches
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench issue
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench verifier
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench plugin
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench webhook
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench exchange
	$(CP) with $(BENCH_CP_DIR) -- cargo bench --bench usage

## plugin: install `kubectl apikey` (the binary kubectl-apikey) into ~/.cargo/bin
plugin:
	cargo install --locked --path . --bin kubectl-apikey

## lint: formatting and clippy, warnings are errors
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

control-plane:
	$(CP) install
	$(CP) start
