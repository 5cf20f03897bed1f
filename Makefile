# ozmap-sytex-sync — the two commands that matter:
#   make demo   the whole pipeline on this machine (embedded NATS, simulators)
#   make test   the whole test suite
GO      ?= go
BIN     := bin

.PHONY: all build demo test test-short vet fmt bench clean

all: build

build:
	$(GO) build -trimpath -o $(BIN)/ ./producer ./consumer

demo: build
	$(GO) run ./deployments/demo -bin $(BIN)

# test: gofmt, vet, the race-enabled suite, then a secrets check: the whole
# verbose output of the run and every program output the end-to-end tests
# saw (REHEARSAL_LOG_DIR) must not contain any of the test secrets listed in
# .ci/test-secrets. The full log stays in bin/testlogs/go-test.log.
TESTLOGS := $(CURDIR)/$(BIN)/testlogs
test:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	@rm -rf $(TESTLOGS) && mkdir -p $(TESTLOGS)
	@echo "$(GO) test -race -count=1 -timeout 12m -v ./...   (full output: $(TESTLOGS)/go-test.log)"
	@REHEARSAL_LOG_DIR=$(TESTLOGS) $(GO) test -race -count=1 -timeout 12m -v ./... > $(TESTLOGS)/go-test.log 2>&1; rc=$$?; \
	  grep -E '^(ok|FAIL|panic:|--- FAIL)|^[[:space:]]+--- FAIL|no test files' $(TESTLOGS)/go-test.log; \
	  if [ $$rc -ne 0 ]; then echo "go test failed (exit $$rc); full output follows"; cat $(TESTLOGS)/go-test.log; exit $$rc; fi
	@if grep -rlF -f .ci/test-secrets $(TESTLOGS); then echo "FAIL: a test secret (.ci/test-secrets) appears in the files above"; exit 1; fi
	@echo "secrets check: none of $$(grep -c . .ci/test-secrets) test secrets in $$(ls $(TESTLOGS) | wc -l) logs"

# bench: the benchmark table (docs: README "Benchmarks"); about 7 minutes.
# BENCH_FLAGS=-quick for a one-minute check, -profile=bin/pprof for CPU profiles.
bench: build
	$(GO) run ./deployments/bench -bin $(BIN) -out $(BIN)/bench.json $(BENCH_FLAGS)

test-short:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) data
