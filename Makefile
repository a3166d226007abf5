# gatewayd: `make run` starts the gateway on the built-in configuration,
# `make test` runs everything CI runs. See README.md.

GO      ?= go
BIN     := bin
DIST    := dist

# Version stamp. The date is the commit's time (UTC), not the build's, so that
# building the same commit twice gives the same binary. Without git (a source
# tarball) the stamp falls back to "dev"/"unknown" or to SOURCE_DATE_EPOCH.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
ifeq ($(origin COMMIT),undefined)
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
endif
ifeq ($(origin DATE),undefined)
DATE    := $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || \
             { [ -n "$$SOURCE_DATE_EPOCH" ] && date -u -d "@$$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ; } || echo unknown)
endif
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

# Every command under cmd/ that has a main.go.
CMDS := $(notdir $(patsubst %/,%,$(dir $(wildcard cmd/*/main.go))))

# Cross targets: name=GOARCH/GOARM (Raspberry Pi Zero/1 are armv6, Pi 2 armv7,
# Pi 3/4/5 with a 64-bit OS arm64).
CROSS := linux-armv6=arm/6 linux-armv7=arm/7 linux-arm64=arm64/

TEST_TIMEOUT ?= 15m
FUZZ_PKGS    ?= ./broker/packet ./broker ./broker/state
# The CI smoke gives each fuzz target a number of inputs, not a duration: with
# Go 1.26 a duration can end the run with a spurious "context deadline
# exceeded" failure (golang/go#75804, fixed in Go 1.27). FuzzConnection drives
# a whole broker connection per input, about 8 times slower than the others.
FUZZTIME     ?= 100000x
FUZZTIME_SLOW ?= 30000x
FUZZ_SLOW    ?= FuzzConnection
LONG_FUZZTIME ?= 5m

.PHONY: all build run cross test test-deps vet unit fuzz-smoke fuzz bench clean

# The steps of `make test` run in order, even under make -j.
.NOTPARALLEL:

all: build

## build: host binaries bin/gatewayd, bin/gatewayctl (every cmd/*).
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## run: build, then start gatewayd on its built-in configuration
## (MQTT on 127.0.0.1:1883, state in ./data). Ctrl-C stops it.
run: build
	./$(BIN)/gatewayd

## cross: static Linux binaries for the boards, in dist/.
cross:
	@mkdir -p $(DIST)
	@set -e; for t in $(CROSS); do \
		name=$${t%%=*}; arch=$${t#*=}; goarch=$${arch%%/*}; goarm=$${arch#*/}; \
		for c in $(CMDS); do \
			echo "$(DIST)/$$c-$$name"; \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch GOARM=$$goarm \
				$(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DIST)/$$c-$$name ./cmd/$$c; \
		done; \
	done

## test: what CI runs: tools the tests need, vet, race-enabled tests, and a
## short run of every fuzz target of the MQTT codec.
test: test-deps appliance-deps vet unit fuzz-smoke

# The interop tests run mosquitto and its clients. As root (CI) they are
# installed from Debian; otherwise say what to install.
test-deps:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then m=1; else m=; fi; \
	if [ -n "$$m" ] && command -v mosquitto_sub >/dev/null 2>&1 && command -v mosquitto_pub >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto and mosquitto-clients (needed by the interop tests)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients </dev/null; \
		if [ -d /run/systemd/system ]; then \
			echo "stopping the mosquitto service the package just started: the tests run their own, and make run needs 1883"; \
			systemctl disable --now mosquitto.service || true; \
		fi; \
	else \
		echo "make test needs mosquitto and mosquitto-clients for the interop tests:"; \
		echo "    sudo apt-get install mosquitto mosquitto-clients"; \
		exit 1; \
	fi

vet:
	$(GO) mod download
	$(GO) vet ./...

unit:
	PATH="$$PATH:/usr/sbin" $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@# Allocation and memory figures mean nothing under the race detector, so
	@# the tests that assert them run once more without it.
	$(GO) test -count=1 -run 'AllocatesNothing|IdleConnectionMemory' ./broker/packet ./broker/topics ./broker

# Each Fuzz* target runs FUZZTIME inputs (FUZZTIME_SLOW for those in FUZZ_SLOW);
# targets are discovered, so new ones are included without editing this file.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_FOR=$(FUZZTIME) FUZZ_FOR_SLOW=$(FUZZTIME_SLOW)

## fuzz: every fuzz target for LONG_FUZZTIME each (make fuzz LONG_FUZZTIME=1h).
## Under Go 1.26 a run can end in "context deadline exceeded" with no new file
## in testdata/fuzz: that is the toolchain's race (golang/go#75804), not a find.
fuzz: FUZZ_FOR ?= $(LONG_FUZZTIME)
fuzz: FUZZ_FOR_SLOW ?= $(FUZZ_FOR)
fuzz:
	@set -e; for p in $(FUZZ_PKGS); do \
		list=$$($(GO) test -list '^Fuzz' $$p) || { echo "$$list"; exit 1; }; \
		targets=$$(echo "$$list" | grep '^Fuzz' || true); \
		if [ -z "$$targets" ]; then echo "$$p: no fuzz targets"; fi; \
		for f in $$targets; do \
			n=$(FUZZ_FOR); \
			case " $(FUZZ_SLOW) " in *" $$f "*) n=$(FUZZ_FOR_SLOW);; esac; \
			echo "fuzz $$p $$f for $$n"; \
			$(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$$n $$p; \
		done; \
	done

# ---------------------------------------------------------------------------
# bench: the side-by-side harness in scripts/bench (its own Go module, so the
# peers never enter gatewayd's go.mod). It starts gatewayd, Debian's mosquitto,
# mochi-mqtt and two zero-logic forwarders (goroutines; one epoll loop) on
# loopback, runs every workload
# against each in turn and rewrites the table in docs/BENCHMARKS.md.
## bench: side-by-side benchmarks (about 10 minutes); bench-smoke: seconds-long run.
.PHONY: bench-smoke bench-go
bench: test-deps
	cd scripts/bench && $(GO) run ./cmd/bench -nice -10 -out ../../docs/BENCHMARKS.md

bench-smoke: test-deps
	cd scripts/bench && $(GO) vet ./... && $(GO) test ./... && $(GO) run ./cmd/bench -smoke

## bench-go: the Go benchmarks of the codec, topic index, broker, store,
## client and the bridge's backlog drain over a slow link (needs mosquitto).
bench-go: test-deps
	$(GO) test -run='^$$' -bench=. -benchmem ./broker/... ./bridge/
# ---------------------------------------------------------------------------

clean:
	rm -rf $(BIN) $(DIST)

# ---------------------------------------------------------------------------
# Kernel-in-the-loop and ARM tests, owned by the board test work
# (scripts/board-test). Self-contained block. See README.md, "Kernel-in-the-loop tests".
.PHONY: test-board test-arm test-arm-deps

BOARD_ARCHES     ?= amd64 arm64 armhf
ARM_TEST_TIMEOUT ?= 20m

## test-board: gatewayd on Debian's kernel under qemu (amd64, arm64, armhf)
## with simulated GPIO, I2C and serial hardware.
test-board:
	scripts/board-test $(BOARD_ARCHES)

## test-arm: the unit tests built for linux/arm (GOARM=6) and linux/arm64,
## run under qemu-user (qemu-arm-static, qemu-aarch64-static; no binfmt).
# Both architectures run even when the first fails; the target fails if either
# did. The emulators must be QEMU 8.0 or newer: scripts/qemu-user prints the
# directory of the installed ones when they are, and otherwise fetches Debian's
# bookworm-backports qemu-user-static into ~/.cache/gatewayd-qemu (Debian 12's
# own QEMU 7.2 can hang a Go program for good when it starts a subprocess).
# GATEWAYD_QEMU_USER tells the tests they are emulated: their deadlines (hang
# guards, never timing assertions) grow by internal/testenv's factor, 10
# unless GATEWAYD_TEST_TIMEOUT_SCALE says otherwise (make test-arm
# GATEWAYD_TEST_TIMEOUT_SCALE=20 on a very slow machine).
test-arm: test-deps
	@q=$$(scripts/qemu-user) || exit 1; rc=0; \
	echo "linux/arm GOARM=6 under $$q/qemu-arm-static ($$($$q/qemu-arm-static --version | head -1))"; \
	PATH="$$PATH:/usr/sbin" GATEWAYD_QEMU_USER=$$q/qemu-arm-static CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 \
		$(GO) test -short -count=1 -timeout $(ARM_TEST_TIMEOUT) -exec $$q/qemu-arm-static ./... || rc=1; \
	echo "linux/arm64 under $$q/qemu-aarch64-static"; \
	PATH="$$PATH:/usr/sbin" GATEWAYD_QEMU_USER=$$q/qemu-aarch64-static CGO_ENABLED=0 GOOS=linux GOARCH=arm64 \
		$(GO) test -short -count=1 -timeout $(ARM_TEST_TIMEOUT) -exec $$q/qemu-aarch64-static ./... || rc=1; \
	exit $$rc

## test-arm-deps: QEMU 8.0+ user-mode emulators (see scripts/qemu-user).
test-arm-deps:
	@scripts/qemu-user >/dev/null
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# The appliance: systemd unit, releases and .deb packages. Owned by the
# appliance work (systemd/, packaging/, scripts/flash). Self-contained block.
.PHONY: verify-unit appliance-deps release deb

## release: static binaries (linux armv6, armv7, arm64, amd64), .deb packages
## (armhf, arm64, amd64) and SHA256SUMS in dist/release; reproducible.
release:
	packaging/release -o $(DIST)/release

## deb: only the .deb packages, in dist/release (DEB_ARCHES=amd64 for one).
DEB_ARCHES ?= armhf arm64 amd64
deb:
	packaging/release -o $(DIST)/release --debs-only $(DEB_ARCHES)

# Debian tools the appliance tests use; installed as root when missing,
# otherwise the tests that need them skip and say why.
APPLIANCE_TOOLS := systemd-analyze:systemd dpkg-deb:dpkg mcopy:mtools mkfs.vfat:dosfstools \
	mkfs.ext4:e2fsprogs sfdisk:fdisk xz:xz-utils

appliance-deps:
	@missing=; for t in $(APPLIANCE_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing (needed by the appliance tests)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $$missing </dev/null || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends $$missing </dev/null; }; \
	else \
		echo "the appliance tests need:$$missing (sudo apt-get install$$missing); they skip without them"; \
	fi

## verify-unit: check the systemd unit, sysusers and tmpfiles files with
## systemd's own tools, and gatewayd's notify protocol (READY, STATUS,
## WATCHDOG, RELOADING, STOPPING) under a fake NOTIFY_SOCKET.
verify-unit: appliance-deps
	PATH="$$PATH:/usr/sbin" $(GO) test -race -count=1 -v ./systemd
	PATH="$$PATH:/usr/sbin" $(GO) test -race -count=1 -run 'SystemdNotify|NoNotifySocket|HealthProbe' ./cmd/gatewayd
# ---------------------------------------------------------------------------
