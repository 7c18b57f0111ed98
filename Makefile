# imageio build, test and benchmark targets.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/imageio/imageio/commands.Version=$(VERSION)
PROGRAMS := $(wildcard main.go) $(wildcard cmd/*/main.go)

.PHONY: build test check vet fmt-check staticcheck bench demo clean

build:
	@mkdir -p bin
	@if [ -f main.go ]; then $(GO) build -ldflags "$(LDFLAGS)" -o bin/imageio . ; fi
	@for d in cmd/*/; do \
		[ -f $$d/main.go ] || continue; \
		n=$$(basename $$d); \
		$(GO) build -ldflags "$(LDFLAGS)" -o bin/$$n ./$$d || exit 1; \
	done

test:
	bash scripts/test.sh

check: test

vet:
	$(GO) vet ./...

fmt-check:
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: build
	bash scripts/bench.sh

demo:
	bash scripts/demo.sh

clean:
	rm -rf bin
