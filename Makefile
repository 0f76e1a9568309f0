# dibs: make help lists the targets.

GO       ?= go
FUZZTIME ?= 3s

# Integration tests run against the real services on this machine.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0
export TEST_DATABASE_URL TEST_REDIS_URL

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Tests that run at their real size only without the race detector, which
# slows them five to tenfold (under -race they run smaller or skip): the A4
# simulation's 4,000 seeds, a million people joining a waiting room, the
# queued-drop acceptance run, the page in Chromium, the demo and three
# nodes taking the acceptance spike.
FULLSIZE      ?= ^(TestSim|TestRoomMemoryPerPerson|TestAcceptanceQueuedDrop|TestPageInChromium|TestDemo|TestThreeNodes)$$
FULLSIZE_PKGS ?= ./post ./memory ./httpapi ./cmd/dibs

# The race-built test binaries are compiled before any test runs: on a cold
# cache that takes minutes, and a compiler sharing the cores with timed tests
# (arrival rates, latencies) makes them measure the compiler.
.PHONY: test
test: fmt-check vet ## what CI runs: gofmt, vet, race tests, full-size tests, short fuzz runs
	@echo "compile the test binaries (race)"
	@$(GO) test -race -count=1 -run '^$$' ./... > /dev/null
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -count=1 -timeout 5m -run '$(FULLSIZE)' $(FULLSIZE_PKGS)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

.PHONY: vet
vet: ## go vet
	$(GO) vet ./...

.PHONY: fmt-check
fmt-check: ## fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# A fuzz run fails when it finds an input that breaks the target, and then it
# writes that input under testdata/fuzz/. On a busy machine Go's fuzzing
# coordinator can also stop with "context deadline exceeded" and no input
# (golang/go#75804); such a run is tried again, up to twice.
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (make fuzz FUZZTIME=1h for the long run)
	@for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			for try in 1 2 3; do \
				echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
				before=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
				out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg 2>&1) && break; \
				after=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null | wc -l); \
				if [ "$$after" != "$$before" ] || [ $$try = 3 ]; then echo "$$out"; exit 1; fi; \
				echo "  the fuzzing coordinator stopped without a failing input; again"; \
			done; \
		done; \
	done

.PHONY: bench
bench: ## measure dibs against the reference servers and rewrite docs/benchmarks.md
	$(GO) run ./bench/run

.PHONY: gobench
gobench: ## Go benchmarks (gate, recorder, handlers)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: soak
soak: ## the kill loop and power-loss tests in full: kill -9 the node every 2 s, 300 times; 10,000 power-cut points
	DIBS_SOAK_KILLS=300 $(GO) test -count=1 -run '^TestFaultKillLoop$$' -timeout 30m -v ./cmd/dibs/
	DIBS_POWERLOSS_CLAIMS=2500 $(GO) test -count=1 -run '^TestFaultPowerLoss$$' -timeout 30m -v ./sqlite/

.PHONY: demo
demo: ## the whole event on this machine
	$(GO) run ./cmd/dibs demo

.PHONY: build
build: ## build bin/dibs
	$(GO) build -o bin/dibs ./cmd/dibs
