# shadowgate: `make run` starts the demo, `make test` runs every test.
GO      ?= go
BIN     := bin
PKGS    := ./...
# A version a .deb accepts: the tag, or 0.0.0+git<commit> before the first tag.
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo 0.0.0+git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
NFPM    ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.44.0
# (v2.44: later releases need modules the Go proxy here does not serve.)
# deb architecture : GOARCH : GOARM. armhf uses GOARM=6: Raspberry Pi OS's
# armhf is ARMv6 hard-float (Pi Zero/1), and a v6 binary runs on v7 too.
DEB_ARCHES := amd64:amd64: arm64:arm64: armhf:arm:6
LDFLAGS := -s -w -X github.com/shadowgate/shadowgate/agent/version.Version=$(VERSION)
CMDS    := $(patsubst cmd/%/main.go,%,$(wildcard cmd/*/main.go))
# Fuzz targets run briefly in `make fuzz` (not part of `make test`).
FUZZTIME ?= 20s

.PHONY: all build run test test-arm test-armhf test-arm64 test-systemd deps lint cross bench fuzz clean deb size

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

run: build
	@mkdir -p tmp/demo
	@echo "shadowgate demo. In another terminal, from this directory: $(BIN)/shadowctl status"
	@echo "From anywhere else, first:  export SHADOWGATE_SOCKET=$(CURDIR)/tmp/demo/api.sock"
	@echo "Jobs (shadowctl job, aws iot): export AWS_SHARED_CREDENTIALS_FILE=$(CURDIR)/configs/demo-credentials"
	$(BIN)/shadowgated --config configs/demo.yaml

# deps installs what the tests need when it is missing: mosquitto (the
# end-to-end tests start real brokers) and qemu-user-static (the arm64 and
# armhf binaries are run under emulation).
deps:
	@missing=""; \
	  { command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } || missing="$$missing mosquitto"; \
	  command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$$missing qemu-user-static"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	      echo "installing$$missing (needed by the tests)"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	    else \
	      echo "missing:$$missing. Run: sudo apt-get install -y$$missing" >&2; exit 1; \
	    fi; \
	  fi

test: deps lint
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	@$(MAKE) --no-print-directory test-armhf

# test-arm runs the gateway's packages as they ship for the Pi, under
# qemu-user: armhf (GOARCH=arm GOARM=6, a 32-bit int and 64-bit atomics on a
# 32-bit CPU, bbolt's mmap on 32 bits) and arm64. Their tests use real
# mosquitto brokers and pseudo-terminals as on amd64, and the processes they
# start and kill -9 (the store's crash helper, shadowsvc) run under the
# emulator too (SHADOWGATE_TEST_EMULATOR). The packages that
# build or start this machine's own binaries (the daemon's, shadowctl's,
# the packaging's) stay on amd64.
ARM_PKGS := ./store/ ./agent/shadow/ ./agent/sync/ ./agent/actuate/ ./agent/link/ \
	./agent/outbox/ ./agent/pipeline/ ./agent/jobs/ ./agent/jobrun/ ./agent/config/ \
	./agent/clock/ ./agent/watchdog/ ./agent/localapi/ ./agent/awsapi/ ./agent/broker/ \
	./agent/shadowsvc/ ./agent/resident/ ./drivers/ ./drivers/gpio/ ./drivers/i2c/ ./drivers/serial/
# make test runs the armhf half (about 2 minutes), the 32-bit one.
test-arm: test-armhf test-arm64
test-armhf: deps
	CGO_ENABLED=0 GOARCH=arm GOARM=6 SHADOWGATE_TEST_EMULATOR=qemu-arm-static \
	  $(GO) test -exec qemu-arm-static -count=1 -timeout 12m $(ARM_PKGS)
test-arm64: deps
	CGO_ENABLED=0 GOARCH=arm64 SHADOWGATE_TEST_EMULATOR=qemu-aarch64-static \
	  $(GO) test -exec qemu-aarch64-static -count=1 -timeout 12m $(ARM_PKGS)

# test-systemd installs the .deb in a Debian bookworm booted with systemd
# (systemd-nspawn, ../shared/tools/systemd-box) and checks the services as a
# user meets them: start, STATUS=, reload (good and bad config), watchdog,
# stop, systemd-analyze security, purge. Root only; skipped otherwise.
test-systemd:
	packaging/systemd-test.sh

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './tmp/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

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

# bench: the package benchmarks, then the whole-daemon report: one markdown
# table of ratios against baselines measured in the same run, written to
# bench/RESULTS.md (about 3 minutes on 2 cores).
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 300x ./agent/shadow/ ./store/
	SHADOWGATE_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestPerformanceReport$$' ./agent/daemon/
	SHADOWGATE_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestCapacityReport$$' ./agent/shadowsvc/
	@cat bench/RESULTS.md bench/SHADOWSVC.md

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime $(FUZZTIME) ./agent/shadow/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./agent/config/

# deb builds dist/shadowgate_<version>_<arch>.deb for amd64, arm64, armhf
# (DEB_ARCHES=amd64:amd64: for one), with the shell completion scripts.
deb:
	@mkdir -p dist
	@for spec in $(DEB_ARCHES); do \
	  deb=$${spec%%:*}; rest=$${spec#*:}; arch=$${rest%%:*}; arm=$${rest#*:}; \
	  out=$(BIN)/deb; rm -rf $$out; mkdir -p $$out; \
	  for c in shadowgated shadowctl shadowsvc; do \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out/$$c ./cmd/$$c || exit 1; \
	  done; \
	  $(GO) run ./cmd/shadowctl completion bash > $$out/shadowctl.bash || exit 1; \
	  $(GO) run ./cmd/shadowctl completion zsh > $$out/_shadowctl || exit 1; \
	  ARCH=$$deb VERSION=$(VERSION) $(NFPM) package -f packaging/nfpm.yaml -p deb -t dist/ || exit 1; \
	done
	@ls -l dist/*.deb

# size prints the stripped binary sizes per architecture (the budget:
# shadowgated for arm64 under 12 MB).
size:
	@mkdir -p $(BIN)/size
	@printf '%-12s %-10s %10s\n' binary arch bytes
	@for t in amd64: arm64: arm:6 arm:7; do \
	  arch=$${t%%:*}; arm=$${t#*:}; \
	  for c in shadowgated shadowctl shadowsvc; do \
	    f=$(BIN)/size/$$c-$$arch$$arm; \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$f ./cmd/$$c || exit 1; \
	    printf '%-12s %-10s %10d\n' $$c $$arch$${arm:+v$$arm} $$(stat -c %s $$f); \
	  done; \
	done
	@s=$$(stat -c %s $(BIN)/size/shadowgated-arm64); limit=$$((12*1024*1024)); \
	  if [ $$s -gt $$limit ]; then echo "shadowgated for arm64 is $$s bytes, over the 12 MB budget" >&2; exit 1; fi

clean:
	rm -rf $(BIN) tmp dist
