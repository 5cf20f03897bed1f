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

test:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...

test-short:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) data
