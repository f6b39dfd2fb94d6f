# nbdmirror: the front door. `make demo`, `make test`, `make bench`.
GO       ?= go
BIN      := bin/nbdmirror
DEMO     := demo
FUZZTIME ?= 5s
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build test vet fuzz demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/nbdmirror

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# Unit, integration and end-to-end tests, then each fuzz target briefly.
test: vet
	$(GO) test -timeout 9m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRequestHeader$$' -fuzztime $(FUZZTIME) ./nbdserver
	$(GO) test -run '^$$' -fuzz '^FuzzNegotiation$$' -fuzztime $(FUZZTIME) ./nbdserver

# One resource on local defaults: a sparse 1 GiB image under ./demo, exported
# on 127.0.0.1:10809. Ctrl-C stops it.
demo: build
	@mkdir -p $(DEMO)
	@echo "NBD URI:  nbd://127.0.0.1:10809/r0"
	@echo "fio:      fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:10809/r0 --rw=randwrite --bs=4k --iodepth=32 --size=256M --time_based --runtime=10"
	@echo "mount:    nbdfuse /mnt/nbd nbd://127.0.0.1:10809/r0 & losetup --find --show /mnt/nbd/nbd"
	@echo "status:   $(BIN) status --control $(DEMO)/r0.sock"
	$(BIN) serve --name r0 --disk $(DEMO)/r0.img --size 1G --nbd-listen 127.0.0.1:10809 --control $(DEMO)/r0.sock --primary

bench:
	$(GO) run ./bench

clean:
	rm -rf bin $(DEMO)
