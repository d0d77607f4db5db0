# tokengate: `make demo` runs a real Caddy with the oauth2_token module
# against the embedded fake TaskNation server; `make test` is what CI runs
# (.ci/run).

GO        ?= go
COUNT     ?= 6
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
PKGS      := ./...

# The custom Caddy: xcaddy pinned here, Caddy pinned by go.mod.
XCADDY_VERSION := v0.4.5
XCADDY         := $(CURDIR)/bin/xcaddy-$(XCADDY_VERSION)/xcaddy
CADDY_VERSION   = $(shell awk '$$1 == "github.com/caddyserver/caddy/v2" { print $$2 }' go.mod)
# What the module compiles from: a change to any of these rebuilds ./caddy.
CADDY_SRC      := go.mod go.sum $(shell find caddymodule middleware tokenstore -name '*.go' ! -name '*_test.go' 2>/dev/null)

.PHONY: all test test-flaky-repeat deps browser-deps redis-deps vet race demo demo-standalone bench bench-e2e bench-e2e-instructions caddy-check readme-xcaddy-check fuzz lint fmt help

all: test

help:
	@echo "make demo            Caddy + oauth2_token in-process against the fake TaskNation server, application and user context (DEMO_ONESHOT=1 to exit after the self-checks)"
	@echo "make demo-standalone the plain-Go gateway (examples/standalone) against the fake server"
	@echo "make test            go vet + go test -race over every package, then caddy-check (what CI runs)"
	@echo "make test-flaky-repeat  the tests that were once flaky, 10 times in a row with -race (~$(FLAKY_REPEAT_TIME))"
	@echo "make browser-deps    Debian's chromium for the headless-browser test, when missing (as root)"
	@echo "make redis-deps      Debian's redis-server for the Redis store tests, when missing (as root; the system service is not left running)"
	@echo "make caddy           build ./caddy with xcaddy $(XCADDY_VERSION): Caddy $(CADDY_VERSION) + this checkout's caddymodule"
	@echo "make caddy-check     ./caddy lists http.handlers.oauth2_token; the example Caddyfiles adapt and validate"
	@echo "make bench           benchmarks with -benchmem -count $(COUNT), summarized by benchstat against the baseline of the same run"
	@echo "make bench-e2e       wrk through ./caddy: oauth2_token, application (a) and user context over 10,000 connected subjects (c), vs a static Authorization header (b), and (c)'s front handler with the static header (d); medians, per-round ratios, Caddy CPU per request (~4 min)"
	@echo "make bench-e2e-instructions  the same sites with Caddy under callgrind: instructions per request, steady on a busy machine (~6 min)"
	@echo "make fuzz            every fuzz target for FUZZTIME each (default $(FUZZTIME)), one after another, with its execs/s; new crashers land in testdata/fuzz"
	@echo "make lint            gofmt check + go vet"

deps:
	$(GO) mod download

# The browser test (caddyfile_test/browser_test.go) drives Debian's
# chromium; CI is a fresh Debian machine as root. A browser comes from apt
# only, never from a download of its own. Not root and no chromium: the
# test skips outside CI and fails in it.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "browser-deps: installing Debian's chromium"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "browser-deps: chromium is not installed and we are not root: install Debian's chromium package"; \
		fi; \
	}

# The Redis tests (internal/redistest) start their own redis-servers on
# free loopback ports (one server; a primary, a replica and three
# sentinels, which are redis-server --sentinel; a six-node cluster) and
# kill them after; they never use a system service.
# Debian's package starts one on 6379 when installed: it is stopped and
# disabled here so that nothing outlives the install. Not root and no
# redis-server: those tests skip outside CI and fail in it.
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "redis-deps: installing Debian's redis-server"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
				&& { systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true; }; \
		else \
			echo "redis-deps: redis-server is not installed and we are not root: install Debian's redis-server package"; \
		fi; \
	}

vet: deps
	$(GO) vet $(PKGS)

# caddy-check comes last: on a fresh machine it builds Caddy with xcaddy,
# which takes minutes.
# Each phase names itself and what it usually takes on 2 cores, warm (cold:
# the first run also compiles Caddy twice, ~14 min in all).
test: vet browser-deps redis-deps
	@echo "== make test 1/4: go test -race over every package (~2.5 min warm: Caddy, Chromium, Redis Sentinel and Cluster run for real)"
	$(GO) test -race -count=1 $(PKGS)
	@# Allocation counts of the hot paths: without the race detector, whose
	@# sync.Pool drops items at random.
	@echo "== make test 2/4: allocation counts of the hot paths, without the race detector (~5 s)"
	$(GO) test -count=1 -run '^TestHotPathAllocs$$' ./middleware/
	@# Every benchmark once, for the counts they assert (herd, backoff).
	@echo "== make test 3/4: every benchmark once, for the counts they assert (~15 s)"
	$(GO) test -run '^$$' -bench . -benchtime 1x ./middleware/ ./tokenstore/
	@echo "== make test 4/4: caddy-check: ./caddy with xcaddy, the README's xcaddy line outside the repository, the example Caddyfiles (~20 s warm)"
	$(MAKE) caddy-check

# The tests that were flaky once, ten times in a row under -race: the two
# that looked for a short user name in sealed values (it turns up by chance
# in about one record in a thousand) and the admin-reload test. Not part of
# make test: ~45 s warm on 2 cores, most of it TestUserContext_RedisStore.
FLAKY_TESTS        := TestUserContext_RedisStore|TestRedisStore_Sealed|TestAdminReload_KeepsTokenUnlessClientChanges
FLAKY_REPEAT_TIME  := 45 s warm
test-flaky-repeat: deps redis-deps
	$(GO) test -race -count=10 -run '^($(FLAKY_TESTS))$$' ./caddyfile_test/ ./tokenstore/

# Fuzzing: go test runs one -fuzz target per invocation, so each runs on
# its own for FUZZTIME; the regular test run replays the seeds under each
# package's testdata/fuzz. A failing input is written there too: keep it
# as a seed once fixed. The summary gives each target's average rate from
# the end of its baseline coverage run (the last "execs: N (X/sec)" line
# of go test covers only the final interval). FUZZ_TMPDIR holds the files
# FuzzFileGet writes (tmpfs when there is one: an expired record costs an
# fsync); FUZZMINIMIZETIME bounds the minimization of each new input,
# which stalls fuzzing while it runs.
FUZZTIME         ?= 60s
FUZZMINIMIZETIME ?= 10s
FUZZ_TMPDIR      ?= $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm)
FUZZ_TARGETS     := \
	./middleware:FuzzTokenResponse \
	./tokenstore:FuzzUnmarshalBinary \
	./tokenstore:FuzzFileRecord \
	./tokenstore:FuzzSealedOpen \
	./tokenstore:FuzzMemoryGet \
	./tokenstore:FuzzFileGet \
	./caddymodule:FuzzCaddyfile

# The average rate of a go test -fuzz log; elapsed is a Go duration (1m0s).
FUZZ_RATE_AWK = \
	function secs(d, t) { t = 0; \
		if (match(d, /[0-9]+h/)) t += substr(d, RSTART, RLENGTH - 1) * 3600; \
		if (match(d, /[0-9]+m/)) t += substr(d, RSTART, RLENGTH - 1) * 60; \
		if (match(d, /[0-9]+s/)) t += substr(d, RSTART, RLENGTH - 1); return t } \
	/now fuzzing/ { s = secs($$3) } \
	/^fuzz: elapsed: .*execs: / { e = secs($$3); n = $$5 + 0 } \
	END { if (e > s) printf "%d execs in %ds: %d execs/s", n, e - s, n / (e - s) }

fuzz: deps
	@log=$$(mktemp); rc=$$(mktemp); trap 'rm -f "$$log" "$$rc"' EXIT; summary=; failed=; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg/, $(FUZZTIME))"; \
		{ $(if $(FUZZ_TMPDIR),TMPDIR=$(FUZZ_TMPDIR)) $(GO) test -run '^$$' -fuzz "^$$name\$$" \
			-fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg/ 2>&1; echo $$? >"$$rc"; } | tee "$$log"; \
		rate=$$(awk '$(FUZZ_RATE_AWK)' "$$log"); \
		if [ "$$(cat "$$rc")" != 0 ]; then failed="$$failed $$name"; rate="FAILED $$rate"; fi; \
		summary="$$summary$$(printf '%-22s %s' "$$name" "$$rate")\n"; \
	done; \
	echo; echo "== fuzz: $(FUZZTIME) per target"; printf "$$summary"; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (inputs in <pkg>/testdata/fuzz/<target>/)"; exit 1; fi

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

demo: deps
	$(GO) run ./examples/demo

demo-standalone: deps
	$(GO) run ./examples/standalone

$(XCADDY):
	GOBIN=$(dir $@) $(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)

# The plugin is this checkout: --replace points the tokengate module at it
# (a replacement must name the module, not the caddymodule package).
# tokengate is not published, yet `go get` asks the module proxy about every
# prefix of github.com/tasknation/tokengate/caddymodule, and an answer other
# than 404/410 (a private path, a filtering proxy) fails the build.
# GOPRIVATE + GOVCS=off make those look-ups "not found" without leaving the
# machine, so Go settles on the local replacement; everything else still
# comes through the module proxy.
caddy: $(XCADDY) $(CADDY_SRC)
	mod=github.com/tasknation/tokengate; govcs=$$($(GO) env GOVCS); \
	GOPRIVATE="$$($(GO) env GOPRIVATE),$$mod" \
	GONOPROXY="$$($(GO) env GONOPROXY),$$mod" \
	GONOSUMDB="$$($(GO) env GONOSUMDB),$$mod" \
	GOVCS="$$mod:off$${govcs:+,$$govcs}" \
	$(XCADDY) build $(CADDY_VERSION) \
		--with $$mod/caddymodule \
		--replace $$mod=. \
		--output $(CURDIR)/caddy

# The README's "# today" xcaddy block, run as a user would: in a temporary
# directory outside the repository, with the checkout at ./tokengate and
# xcaddy on PATH. The Caddy it builds must list the module (the build
# reuses the module and build caches `make caddy` warmed).
readme-xcaddy-check: $(XCADDY)
	@dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; ln -s $(CURDIR) "$$dir/tokengate"; \
	awk '/^# today$$/ {f = 1; next} f && /^```/ {exit} f' README.md > "$$dir/build.sh"; \
	grep -q 'xcaddy build' "$$dir/build.sh" || { echo "readme-xcaddy-check: no '# today' xcaddy block in README.md"; exit 1; }; \
	(cd "$$dir" && PATH="$(dir $(XCADDY)):$$PATH" sh ./build.sh > build.log 2>&1) \
		|| { cat "$$dir/build.log"; echo "readme-xcaddy-check: the README's xcaddy line failed outside the repository"; exit 1; }; \
	"$$dir/caddy" list-modules | grep -qx 'http.handlers.oauth2_token' \
		|| { echo "readme-xcaddy-check: the README's Caddy does not list http.handlers.oauth2_token"; exit 1; }; \
	echo "readme-xcaddy-check: ok: the README's xcaddy line builds a Caddy with the module outside the repository"

# adapt --validate also provisions every module, oauth2_token included, so
# the {env.*} placeholders of the example Caddyfiles get stand-in values
# (adapt itself leaves placeholders as they are). Nothing is started.
caddy-check: caddy readme-xcaddy-check
	@./caddy list-modules | grep -qx 'http.handlers.oauth2_token' \
		|| { echo "caddy-check: ./caddy does not list http.handlers.oauth2_token"; exit 1; }
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for f in examples/Caddyfile examples/demo/Caddyfile examples/user-context/Caddyfile; do \
		TASKNATION_CLIENT_ID=caddy-check TASKNATION_CLIENT_SECRET=caddy-check \
		TASKNATION_TOKEN_URL=http://127.0.0.1:9/oauth2/token TASKNATION_API_ADDR=127.0.0.1:9 \
		TASKNATION_AUTH_URL=http://127.0.0.1:9/oauth2/auth TOKENGATE_KEY=Y2FkZHktY2hlY2stc3RhbmQtaW4ta2V5LTMyLWJ5dGU= \
		./caddy adapt --config $$f --adapter caddyfile --validate >/dev/null 2>"$$log" \
			|| { cat "$$log"; echo "caddy-check: ./caddy adapt --config $$f failed"; exit 1; }; \
		grep '"level":"warn"' "$$log" || true; \
	done
	@echo "caddy-check: ok: ./caddy $$(./caddy version | cut -d' ' -f1) lists http.handlers.oauth2_token; examples/Caddyfile, examples/demo/Caddyfile and examples/user-context/Caddyfile adapt and validate"

# Benchmarks: every comparison runs in the same process as its baseline
# (sub-benchmarks impl=baseline|tokengate|x-oauth2); benchstat prints the
# medians and the ratio of each column to the first.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./middleware/ ./tokenstore/ ./caddymodule/ | tee bench.txt
	@echo; echo "== hot path and store (vs baseline) =="
	$(BENCHSTAT) -filter '-.name:/^Herd/' -col /impl bench.txt
	@echo; echo "== herd: x/oauth2 vs tokengate =="
	$(BENCHSTAT) -filter '.name:/^Herd/' -col '/impl@(x-oauth2 tokengate)' bench.txt
	@echo; echo "== a connected user's cached token vs the application token (target: at most 2x) =="
	$(BENCHSTAT) -filter '.name:/^Wrap_User/' -col '/impl@(app user)' bench.txt

# End to end over loopback: ./caddy with oauth2_token vs ./caddy with a
# static Authorization header, same upstream, rounds alternating; wrk from
# Debian (installed when missing, as root), else a Go load generator.
BENCH_E2E_FLAGS ?=
bench-e2e: caddy
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "bench-e2e: wrk not available; falling back to the Go load generator"
	$(GO) run ./examples/bench-e2e -caddy ./caddy $(BENCH_E2E_FLAGS)

# The same four sites with Caddy under valgrind's callgrind: instructions
# per request, which come out the same whatever else the machine runs (the
# load figures above do not). Valgrind from Debian (installed when
# missing, as root). ~6 min.
bench-e2e-instructions: caddy
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	$(GO) run ./examples/bench-e2e -caddy ./caddy -instructions 5000 -rounds 3 -users 2000 $(BENCH_E2E_FLAGS)
