# shadowgate: `make run` starts the demo, `make test` runs every test.
GO      ?= go
BIN     := bin
PKGS    := ./...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/shadowgate/shadowgate/agent/version.Version=$(VERSION)
CMDS    := $(patsubst cmd/%/main.go,%,$(wildcard cmd/*/main.go))
# Fuzz targets run briefly in `make fuzz` (not part of `make test`).
FUZZTIME ?= 20s

.PHONY: all build run test deps lint cross bench fuzz clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

run: build
	@mkdir -p tmp/demo
	$(BIN)/shadowgated --config configs/demo.yaml

# deps installs what the tests need when it is missing (mosquitto for the
# end-to-end tests against a real broker).
deps:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing mosquitto (needed by the end-to-end tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null) || { echo "apt-get install mosquitto failed" >&2; exit 1; }; \
	  else \
	    echo "mosquitto is missing: run 'sudo apt-get install -y mosquitto' (the end-to-end tests start their own broker)" >&2; exit 1; \
	  fi; }

test: deps lint
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './tmp/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

cross:
	@mkdir -p $(BIN)
	@for t in linux/amd64/ linux/arm64/ linux/arm/6 linux/arm/7; do \
	  os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
	  suffix=$$arch$${arm:+v$$arm}; \
	  for c in $(CMDS); do \
	    echo "build $$c $$os/$$suffix"; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c-$$os-$$suffix ./cmd/$$c || exit 1; \
	  done; \
	done

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime $(FUZZTIME) ./agent/shadow/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./agent/config/

clean:
	rm -rf $(BIN) tmp
