GO ?= go
BIN := bin/drover
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/drover-project/drover/internal/cli.Version=$(VERSION)
# Packages with concurrency run under the race detector.
RACE_PKGS := ./internal/store/... ./internal/engine/... ./internal/server/... ./internal/agent/... ./internal/labels/... ./internal/noderange/...

.PHONY: build test unit e2e lint bench demo fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/drover

demo: build
	$(BIN) demo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -count=1 -race $(RACE_PKGS)

# End-to-end tests: real server and agent processes on loopback.
e2e: build
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m ./test/e2e/...

test: lint unit e2e

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/noderange
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/labels
	$(GO) test -run '^$$' -fuzz FuzzParseDocument -fuzztime 30s ./internal/model
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/content

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/store/bolt ./internal/noderange
	DROVER_BIN=$(CURDIR)/$(BIN) $(GO) run ./bench/agents -agents 10000

clean:
	rm -rf bin e2e.log
