# nbdmirror: the front door. `make demo`, `make test`, `make bench`.
GO       ?= go
BIN      := bin/nbdmirror
DEMO     := demo
# Fuzz budgets are counts of executions, not durations: Go 1.26's fuzzer can
# report "context deadline exceeded" when a duration ends mid-execution on a
# busy machine (golang/go#75804), a failure without any failing input.
FUZZTIME ?= 100000x
# A peer handshake over TLS costs a certificate check per execution (about
# 225 a second here): its target gets fewer, to keep make test in minutes.
FUZZTIME_TLS ?= 5000x
# make stress runs its five rounds of link resets this many at a time: two
# here kept every write under 1.7 s; five beside other work (load 30-38)
# once left a Primary's lone writes 4.7 s behind a resync's data.
STRESS_PARALLEL ?= 2
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build testtools test vet fuzz simtest simbugs vmtest stress demo bench benchtool profile clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/nbdmirror

vet:
	$(GO) vet ./...
	$(GO) -C bench vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# The tools the tests drive, as TOOL=DEBIAN-PACKAGE (a TOOL starting with /
# is a file). `make test` installs the missing ones first when it runs as
# root, or stops with the apt-get line that would (.ci/need-tools); the
# tests then fail, never skip, when a tool is missing
# (NBDMIRROR_REQUIRE_TOOLS, see internal/testtools).
TEST_TOOLS := git=git fio=fio nbdinfo=libnbd-bin nbdcopy=libnbd-bin nbdfuse=nbdfuse fusermount3=fuse3 nbdkit=nbdkit \
	qemu-img=qemu-utils qemu-io=qemu-utils setpriv=util-linux etcd=etcd-server \
	losetup=mount mount=mount umount=mount mkfs.ext4=e2fsprogs e2fsck=e2fsprogs ss=iproute2 \
	/etc/ssl/certs/ca-certificates.crt=ca-certificates tcpdump=tcpdump gnutls-cli=gnutls-bin
VM_TOOLS := qemu-system-x86_64=qemu-system-x86 socat=socat mke2fs=e2fsprogs e2fsck=e2fsprogs \
	flock=util-linux /etc/ssl/certs/ca-certificates.crt=ca-certificates

testtools:
	@.ci/need-tools $(TEST_TOOLS)
	@test "$$(id -u)" = 0 || echo "make test: not root: the file system tests skip (mounting needs root)"

# Unit, integration and end-to-end tests, then the simulation's 1000
# schedules, each of its planted bugs, and each fuzz target briefly. The
# simulation runs on its own, not beside another package's end-to-end
# tests: its liveness invariant bounds every request by the nodes' peer
# timeout (200 ms) plus 1 s, and it failed once in a CI run where it
# shared the two cores with them (two writes held 1.21 s; that seed passed
# 16 of 16 runs at once without them).
test: export NBDMIRROR_REQUIRE_TOOLS := 1
test: testtools vet
	$(GO) test -timeout 9m $$($(GO) list ./... | grep -v '/replication/sim$$')
	$(GO) test -timeout 5m ./replication/sim
	$(GO) -C bench test ./...
	$(MAKE) simbugs
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRequestHeader$$' -fuzztime $(FUZZTIME) ./nbdserver
	$(GO) test -run '^$$' -fuzz '^FuzzNegotiation$$' -fuzztime $(FUZZTIME) ./nbdserver
	$(GO) test -run '^$$' -fuzz '^FuzzNegotiationTLS$$' -fuzztime $(FUZZTIME) ./nbdserver
	$(GO) test -run '^$$' -fuzz '^FuzzParseClientHello$$' -fuzztime $(FUZZTIME) ./internal/tlspsk
	$(GO) test -run '^$$' -fuzz '^FuzzHandshake$$' -fuzztime $(FUZZTIME) ./internal/tlspsk
	$(GO) test -run '^$$' -fuzz '^FuzzFrameReader$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzHello$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzRecord$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzRecords$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzDataReader$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzAuth$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzRefuse$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzBarrier$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzAck$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzPing$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzSyncDone$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzRoleAnswer$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzSyncStart$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzSumRequest$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzSums$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzBitmapChunk$$' -fuzztime $(FUZZTIME) ./replication/wire
	$(GO) test -run '^$$' -fuzz '^FuzzPeerHandshakeTLS$$' -fuzztime $(FUZZTIME_TLS) ./replication

# The two-node simulation (replication/sim) on more seeds than `make test`
# runs: SEEDS schedules from FIRST (default: the clock, so each run tries new
# ones); a failing seed prints its replay command. ALL=1 draws also the
# fault kinds of open bugs (sim.KnownBugs).
SEEDS ?= 10000
FIRST ?= $(shell date +%s)
simtest:
	$(GO) test -count=1 -timeout 60m -run '^TestSim$$' ./replication/sim -seeds $(SEEDS) -first $(FIRST) $(if $(ALL),-all-faults)

# Each invariant of the simulation against the bug planted to break it.
simbugs:
	$(GO) test -tags simbugs -count=1 -timeout 20m -run '^TestPlanted' -v ./replication/sim

# The kernel's nbd driver end to end: a Debian guest under qemu attaches
# /dev/nbd0 to a pair on loopback, runs ext4 on it and lives through a
# failover (cmd/nbdmirror/vm_test.go, testdata/vm/). Needs qemu-system-x86,
# socat and apt-get download; the .debs are cached in ~/.cache/nbdmirror-vm.
vmtest:
	@.ci/need-tools $(VM_TOOLS)
	$(GO) test -tags vmtest -run '^TestVM' -count=1 -timeout 5m -v ./cmd/nbdmirror

# The long end-to-end runs (cmd/nbdmirror, NBDMIRROR_STRESS=1): 5 rounds of
# 1000 link resets under lone writes, SIGTERM during a reset storm, 50
# split brains, 20 kill -9 failovers through etcd, and the etcd tests
# (io-error on a lost quorum among them). Needs root, fio, ss
# (iproute2) and etcd (etcd-server).
stress:
	NBDMIRROR_STRESS=1 $(GO) test -run 'Stress|SplitBrainSeenByBoth|Etcd' -parallel $(STRESS_PARALLEL) -count=1 -timeout 90m -v ./cmd/nbdmirror

# A Primary and a Secondary on loopback with sparse 1 GiB images and a
# generated secret under ./demo. Ctrl-C stops both.
demo: build
	@mkdir -p $(DEMO)
	@test -s $(DEMO)/secret || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $(DEMO)/secret)
	@trap 'kill $$A $$B 2>/dev/null; wait; echo; echo stopped' INT TERM; \
	$(BIN) serve --name r0 --disk $(DEMO)/a.img --size 1G --nbd-listen 127.0.0.1:10809 \
		--control $(DEMO)/a.sock --peer-listen 127.0.0.1:7789 --peer 127.0.0.1:7790 \
		--secret-file $(DEMO)/secret --primary 2>$(DEMO)/a.log & A=$$!; \
	$(BIN) serve --name r0 --disk $(DEMO)/b.img --size 1G --nbd-listen 127.0.0.1:10810 \
		--control $(DEMO)/b.sock --peer-listen 127.0.0.1:7790 --peer 127.0.0.1:7789 \
		--secret-file $(DEMO)/secret --secondary 2>$(DEMO)/b.log & B=$$!; \
	for i in $$(seq 50); do test -S $(DEMO)/a.sock && test -S $(DEMO)/b.sock && break; sleep 0.1; done; sleep 0.5; \
	echo "NBD URI:  nbd://127.0.0.1:10809/r0   (logs: $(DEMO)/a.log, $(DEMO)/b.log)"; \
	echo "fio:      fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:10809/r0 --rw=randwrite --bs=4k --iodepth=32 --size=256M --time_based --runtime=10"; \
	echo "mount:    mkdir -p /mnt/nbd && nbdfuse /mnt/nbd nbd://127.0.0.1:10809/r0 & losetup --find --show /mnt/nbd/nbd"; \
	echo "status:   $(BIN) status --control $(DEMO)/a.sock   (the Secondary: --control $(DEMO)/b.sock)"; \
	echo; $(BIN) status --control $(DEMO)/a.sock; $(BIN) status --control $(DEMO)/b.sock; \
	echo; echo "Ctrl-C stops both."; wait

# fio against nbdmirror (standalone, pair C, pair A), nbdkit and qemu's quorum
# mirror; installs what it drives when missing (Debian, as root). The harness
# is a module of its own (bench/go.mod: its chart library stays out of the
# daemon's go.mod), built as bin/bench; BENCH_FLAGS go to it, e.g.
# make bench BENCH_FLAGS='--against v1.2 --note "what changed"'.
BENCH_TOOLS := fio=fio nbdinfo=libnbd-bin nbdkit=nbdkit qemu-nbd=qemu-utils \
	qemu-storage-daemon=qemu-system-common
BENCH_FLAGS ?=
bench: benchtool
	@.ci/need-tools $(BENCH_TOOLS)
	bin/bench --warm $(BENCH_FLAGS)

benchtool:
	$(GO) -C bench build -o ../bin/bench .

# A CPU profile of a pair's Primary under 4k random writes at QD32, in
# ./profile (pair images are sparse 1 GiB files there).
PROFDIR := profile
profile: build
	@.ci/need-tools fio=fio curl=curl
	@rm -rf $(PROFDIR) && mkdir -p $(PROFDIR) && (umask 077; echo profile-secret-0123456789 > $(PROFDIR)/secret)
	@trap 'kill $$A $$B 2>/dev/null; wait' EXIT; \
	$(BIN) serve --disk $(PROFDIR)/a.img --size 1G --nbd-listen 127.0.0.1:10819 --control $(PROFDIR)/a.sock \
		--peer-listen 127.0.0.1:7799 --peer 127.0.0.1:7798 --secret-file $(PROFDIR)/secret --primary \
		--metrics-listen 127.0.0.1:9799 --pprof 2>$(PROFDIR)/a.log & A=$$!; \
	$(BIN) serve --disk $(PROFDIR)/b.img --size 1G --nbd-listen 127.0.0.1:10818 --control $(PROFDIR)/b.sock \
		--peer-listen 127.0.0.1:7798 --peer 127.0.0.1:7799 --secret-file $(PROFDIR)/secret --secondary \
		2>$(PROFDIR)/b.log & B=$$!; \
	for i in $$(seq 100); do $(BIN) status --json --control $(PROFDIR)/a.sock 2>/dev/null | grep -q '"Established"' && break; sleep 0.1; done; \
	fio --name=profile --ioengine=nbd --uri=nbd://127.0.0.1:10819/r0 --rw=randwrite --bs=4k --iodepth=32 \
		--size=1G --time_based --runtime=15 --output=$(PROFDIR)/fio.json >/dev/null & F=$$!; \
	sleep 2; curl -s -o $(PROFDIR)/primary.prof 'http://127.0.0.1:9799/debug/pprof/profile?seconds=10'; wait $$F; \
	$(GO) tool pprof -top -nodecount=25 $(BIN) $(PROFDIR)/primary.prof | head -35

clean:
	rm -rf bin $(DEMO) $(PROFDIR)
