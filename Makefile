# The front door. `make test` is the command the README and CI use.
.PHONY: all build dev test test-short check fmt vet bench deps

all: check

build:
	go build -o bin/consilium ./cmd/consilium

# Run the gateway on its embedded default (filesystem store under ./consilium-data).
dev:
	go run ./cmd/consilium serve --dev

# Every test, with the race detector; installs MinIO and test tools first.
test:
	scripts/test.sh

# The quick subset: skips the gigabyte round trips.
test-short:
	scripts/test.sh -short

check: fmt vet test

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

deps:
	scripts/deps.sh all
