# Outcall. `sudo make run` installs what is missing, builds and starts outcalld;
# `sudo make test` runs the whole suite (root: BPF, nftables, namespaces).

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Debian keeps asm/types.h under the multiarch include directory.
export MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

DEBIAN_PACKAGES := clang llvm libbpf-dev linux-libc-dev bpftool nftables iproute2 util-linux iperf3 gcc make busybox-static

.PHONY: all build deps docker-up bench-deps generate check-generate test test-docker bench run image vet clean

all: build

deps: ## install the system packages the build and the tests need (Debian)
	@# busybox-static is the root filesystem of the Docker tests' images
	@# (no registry here); docker.io only where no dockerd is installed, so
	@# that a Docker CE install is left as it is.
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v dockerd >/dev/null 2>&1 || missing="$$missing docker.io"; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# Where docker-up logs a dockerd it starts itself.
DOCKERD_LOG ?= /tmp/outcall-dockerd.log

docker-up: ## start dockerd unless it answers (the Docker tests and `make image` need it)
	@if ! docker info >/dev/null 2>&1; then \
	  [ "$$(id -u)" = 0 ] || { echo "not root: dockerd not started (the Docker tests skip)"; exit 0; }; \
	  command -v dockerd >/dev/null 2>&1 || { echo "dockerd not installed (make deps installs docker.io)"; exit 1; }; \
	  if [ -d /run/systemd/system ] && systemctl cat docker.service >/dev/null 2>&1; then \
	    echo "starting docker.service"; systemctl start docker.service || true; \
	  fi; \
	fi; \
	if ! docker info >/dev/null 2>&1; then \
	  echo "starting dockerd (log: $(DOCKERD_LOG))"; \
	  setsid dockerd </dev/null >$(DOCKERD_LOG) 2>&1 & pid=$$!; \
	  for _ in $$(seq 60); do docker info >/dev/null 2>&1 && break; kill -0 $$pid 2>/dev/null || break; sleep 1; done; \
	  if ! docker info >/dev/null 2>&1; then \
	    if kill -0 $$pid 2>/dev/null; then echo "dockerd did not answer within 60 s"; else echo "dockerd exited"; fi; \
	    echo "its log ($(DOCKERD_LOG)):"; cat $(DOCKERD_LOG); exit 1; \
	  fi; \
	fi

bench-deps: ## install the benchmark peers (dnsmasq, unbound, tinyproxy, squid); not needed by the tests
	@# The names benchmarks' peers (BENCHMARKS.md); one that cannot be had is
	@# skipped by the benchmark with its reason, never a failure here.
	@missing=""; for c in dnsmasq unbound tinyproxy squid; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then echo "installing benchmark peers:$$missing"; \
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || echo "benchmark peers not installed:$$missing (their benchmarks skip)"; fi

build: ## build outcalld, outcall and outcall-agent into bin/
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/outcalld ./cmd/outcall ./cmd/outcall-agent

generate: ## regenerate the BPF objects with clang (bpf2go)
	$(GO) generate ./pkg/datapath

check-generate: generate ## fail if the committed BPF objects differ from a fresh build
	git diff --exit-code -- pkg/datapath

vet:
	$(GO) vet ./...

test: deps docker-up ## the whole suite, with the race detector; needs root
	OUTCALL_REQUIRE_PRIVILEGED=$${OUTCALL_REQUIRE_PRIVILEGED:-1} $(GO) test -race -count=1 -timeout 20m ./...

test-docker: deps docker-up ## the Docker harness's tests alone (part of `make test`)
	OUTCALL_REQUIRE_PRIVILEGED=$${OUTCALL_REQUIRE_PRIVILEGED:-1} $(GO) test -race -count=1 -timeout 10m -v ./test/dockerlab/...

bench: deps bench-deps docker-up ## print datapath ns/packet, rule reload and evaluation times, filtered/unfiltered throughput, DNS filter and proxy vs peers, container create vs plain Docker, agent API checks/s and shim overhead
	$(GO) test -run '^$$' -bench . -benchtime 5x ./pkg/datapath
	$(GO) test -run '^$$' -bench 'Reload|PacketVerdict' -benchtime 5x ./pkg/rules
	$(GO) test -run '^$$' -bench 'Evaluate' -benchtime 5000x ./pkg/rules
	$(GO) test -run '^$$' -bench . -skip '^Benchmark(DNSFilter|DNSHoldTime|Proxy)$$' -benchtime 3x ./test/lab
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	$(GO) test -run '^$$' -bench '^Benchmark(DNSFilter|DNSHoldTime|Proxy)$$' -benchtime 1x -timeout 15m ./test/lab
	$(GO) test -run '^$$' -bench 'PermissionCheck' -benchtime 2000x ./pkg/agentapi
	$(GO) test -run '^$$' -bench 'ShimExec' -benchtime 100x ./pkg/shim
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 15m ./test/dockerbench

run: deps build ## start outcalld in the foreground with the shipped defaults
	install -d -m 0755 /etc/outcall/rules.d
	for f in rules/*.yaml; do [ -e /etc/outcall/rules.d/$$(basename $$f) ] || install -m 0644 $$f /etc/outcall/rules.d/; done
	@# The shim helper mounts put into containers (--shim-host-path's default).
	install -D -m 0755 $(BIN)/outcall-agent /usr/local/bin/outcall-agent
	$(BIN)/outcalld

image: build ## build the outcalld image from the binaries above (no pull)
	DOCKER_BUILDKIT=0 docker build -f Dockerfile.build -t outcalld:$(VERSION) .

clean:
	rm -rf $(BIN)
