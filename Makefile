GO ?= go
BIN := bin/drover
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/drover-project/drover/internal/cli.Version=$(VERSION)
# Packages with concurrency run under the race detector.
RACE_PKGS := ./internal/store/... ./internal/engine/... ./internal/server/... ./internal/agent/... ./internal/labels/... ./internal/noderange/... ./internal/boot/... ./internal/render/... ./internal/adhoc/... ./internal/mirror/... ./internal/lab/...

.PHONY: build test unit e2e lint bench demo lab lab-down fuzz clean discovery-image deps qemu-deps

# Debian packages that tests and benchmarks run (dhclient, perfdhcp, Kea,
# tftp-hpa's client) and the iPXE binaries the TFTP server hands out.
# Installed only when missing, and only as root; without them the tests
# that need root skip, and the others do not use them.
DEB_DEPS := iproute2 isc-dhcp-client kea-admin kea-dhcp4-server ipxe tftp-hpa

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(DEB_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		fi; \
	fi

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/drover

# The network-boot discovery image: build/discovery/{vmlinuz,initrd.img}
# (docs/discovery.md). Installs Debian packages it lacks when run as root.
discovery-image: build
	DROVER_BIN=$(CURDIR)/$(BIN) scripts/discovery-image.sh

demo: build
	$(BIN) demo

# The multi-site lab (docs/lab.md): a manager, 4 sites, 25 machines each,
# 50 ms each way between manager and sites; as root in network namespaces.
# Then: eval "$$(bin/drover lab env)"; make lab-down removes it.
LAB_FLAGS ?=
lab: build
	$(BIN) lab up $(LAB_FLAGS)

lab-down:
	$(BIN) lab down

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -count=1 -race $(RACE_PKGS)

# QEMU for the boot tests, without the GUI it recommends (VMs run
# -nographic), its NICs' iPXE ROMs, UEFI firmware (OVMF), and Debian's
# network installer (the kernel and initrd TestDebianInstallerPreseed
# boots). Root only, like deps.
QEMU_DEPS := qemu-system-x86 ipxe-qemu ovmf debian-installer-12-netboot-amd64

qemu-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(QEMU_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	fi

# End-to-end tests: real server and agent processes on loopback, and VMs
# booting the discovery image (the test brings build/discovery up to date).
e2e: build qemu-deps
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m ./test/e2e/...

test: deps lint unit e2e

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/noderange
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/labels
	$(GO) test -run '^$$' -fuzz FuzzParseDocument -fuzztime 30s ./internal/model
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/content
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime 30s ./internal/boot/dhcp

bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/store/bolt ./internal/noderange ./internal/mirror
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench/agents -agents 10000
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench/run -agents 10000
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench/dhcp

clean:
	rm -rf bin e2e.log
