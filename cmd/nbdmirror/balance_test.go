package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
)

// TestReadBalancingRoundRobin: a Primary with --read-balancing round-robin
// serves a share of fio's random reads from the peer (stats.read_remote,
// shown by plain status too), and a stamped write load that reads every
// block back through the balanced path as soon as its write is
// acknowledged, 16 in flight with FUA and FLUSH mixed in, never reads a
// stale block. The images are identical after a clean stop.
func TestReadBalancingRoundRobin(t *testing.T) {
	needTools(t, "fio")
	a, b := newPair(t, "64M", []string{"--read-balancing", "round-robin"}, nil)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	runFio(t, a.uri(), "--rw=write", "--bs=1M", "--size=32M")
	before := a.status()
	runFio(t, a.uri(), "--rw=randread", "--bs=4k", "--iodepth=16", "--size=32M", "--time_based", "--runtime=2")
	st := a.status()
	reads, remote := st.NBD.Reads-before.NBD.Reads, st.Stats.ReadRemote-before.Stats.ReadRemote
	t.Logf("fio randread: %d reads, %d served by the peer", reads, remote)
	if reads == 0 || remote == 0 || remote > reads {
		t.Fatalf("round-robin: the peer served %d of %d reads", remote, reads)
	}
	out, err := exec.Command(binary, "status", "--control", a.control).Output()
	if want := fmt.Sprintf("read-remote:%d", st.Stats.ReadRemote); err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("plain status lacks %q (%v):\n%s", want, err, out)
	}

	ck := checker.New(checker.Options{Blocks: 4096, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 23, ReadBack: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := ck.Run(ctx, dialNode(t, a)); err != nil {
		t.Fatalf("read after write: %v\n%s", err, a.logs())
	}
	after := a.status()
	t.Logf("read after write: %d writes acknowledged, %d read back, %d by the peer",
		ck.Acked(), ck.ReadBacks(), after.Stats.ReadRemote-st.Stats.ReadRemote)
	if ck.ReadBacks() == 0 || after.Stats.ReadRemote == st.Stats.ReadRemote {
		t.Fatalf("no read back went to the peer: %d read back, read_remote %d", ck.ReadBacks(), after.Stats.ReadRemote)
	}
	stopPair(t, a, b)
}
