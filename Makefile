# tokengate: `make demo` runs the gateway against the embedded fake
# TaskNation server; `make test` is what CI runs (.ci/run).

GO        ?= go
COUNT     ?= 6
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
PKGS      := ./...

.PHONY: all test deps vet race demo bench lint fmt help

all: test

help:
	@echo "make demo   run the standalone gateway against the fake TaskNation server (DEMO_ONESHOT=1 to exit after its self-check)"
	@echo "make test   go vet + go test -race over every package (what CI runs)"
	@echo "make bench  benchmarks with -benchmem -count $(COUNT), summarized by benchstat against the baseline of the same run"
	@echo "make lint   gofmt check + go vet"

deps:
	$(GO) mod download

vet: deps
	$(GO) vet $(PKGS)

test: vet
	$(GO) test -race -count=1 $(PKGS)
	@# Every benchmark once, for the counts they assert (herd, backoff).
	$(GO) test -run '^$$' -bench . -benchtime 1x ./middleware/ ./tokenstore/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

demo: deps
	$(GO) run ./examples/standalone

# Benchmarks: every comparison runs in the same process as its baseline
# (sub-benchmarks impl=baseline|tokengate|x-oauth2); benchstat prints the
# medians and the ratio of each column to the first.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./middleware/ ./tokenstore/ | tee bench.txt
	@echo; echo "== hot path and store (vs baseline) =="
	$(BENCHSTAT) -filter '-.name:/^Herd/' -col /impl bench.txt
	@echo; echo "== herd: x/oauth2 vs tokengate =="
	$(BENCHSTAT) -filter '.name:/^Herd/' -col '/impl@(x-oauth2 tokengate)' bench.txt
