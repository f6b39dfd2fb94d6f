package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// writeImage fills a disk image with a byte pattern before any daemon runs.
func writeImage(t *testing.T, path string, size int, b byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{b}, size), 0o600); err != nil {
		t.Fatal(err)
	}
}

func ctl(t *testing.T, n *node, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append(args, "--control", n.control)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdmirror %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestUnrelatedDataWaitsForResolve: two disks with different data and no
// common history stay apart, untouched, until the operator says which one
// gives in; then that one takes the other's data.
func TestUnrelatedDataWaitsForResolve(t *testing.T) {
	a, b := newPair(t, "", nil, nil)
	writeImage(t, a.disk, 8<<20, 0xaa)
	writeImage(t, b.disk, 8<<20, 0xbb)
	a.start()
	b.start()
	for _, n := range []*node{a, b} {
		n.waitFor("StandAlone", 10*time.Second, func(st Status) bool { return st.Peer.Connection == "StandAlone" })
		if st := n.status(); st.StandAlone == "" {
			t.Fatalf("no reason given for StandAlone: %+v", st)
		}
	}
	sumA, sumB := fileSum(t, a.disk), fileSum(t, b.disk)
	time.Sleep(300 * time.Millisecond) // room for a wrong write to happen
	if fileSum(t, a.disk) != sumA || fileSum(t, b.disk) != sumB {
		t.Fatal("an image changed while StandAlone")
	}

	ctl(t, b, "resolve", "--discard-my-data")
	ctl(t, a, "connect")
	a.waitFor("synced", 30*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	b.waitFor("UpToDate", 30*time.Second, established)
	stopPair(t, a, b)
	if fileSum(t, b.disk) != sumA {
		t.Fatal("the resolved node does not hold the other's data")
	}
}

// splitPair makes a pair whose link runs through a proxy that can be cut.
func splitPair(t *testing.T, extra ...string) (a, b *node, p *proxy) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(pairSecret), 0o600)
	la := freeAddr(t)
	p = startProxy(t, la)
	a = newNode(t, "32M", "--primary").withPeer(la, "", secret, extra...)
	b = newNode(t, "32M", "--secondary").withPeer(freeAddr(t), p.addr(), secret, extra...)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	return a, b, p
}

func writeBlock(t *testing.T, n *node, off int64, fill byte) {
	t.Helper()
	c := dialNode(t, n)
	defer c.Close()
	if _, err := c.WriteAt(bytes.Repeat([]byte{fill}, 4096), off, nbdclient.FlagFUA); err != nil {
		t.Fatalf("write on %s: %v", n.nbd, err)
	}
}

func apart(st Status) bool { return st.Peer.Connection != "Connected" }

// TestSplitBrainAfterLinkCut: the link is cut, the Secondary is promoted
// and both write. When the link returns both refuse each other: StandAlone,
// split brain in status and log, nothing overwritten. After resolve on one
// side, it takes the other's data.
func TestSplitBrainAfterLinkCut(t *testing.T) {
	a, b, p := splitPair(t)
	p.blackhole(true)
	a.waitFor("apart", 10*time.Second, apart)
	b.waitFor("apart", 10*time.Second, apart)
	ctl(t, b, "role", "primary")
	writeBlock(t, a, 0, 0xaa)
	writeBlock(t, b, 4096, 0xbb)
	sumA, sumB := fileSum(t, a.disk), fileSum(t, b.disk)

	p.blackhole(false)
	for _, n := range []*node{a, b} {
		n.waitFor("split brain", 20*time.Second, func(st Status) bool {
			return st.Peer.Connection == "StandAlone" && strings.Contains(st.StandAlone, "split brain")
		})
		n.waitLog("split brain", time.Second)
	}
	if fileSum(t, a.disk) != sumA || fileSum(t, b.disk) != sumB {
		t.Fatal("a split brain changed a disk")
	}

	b.waitFor("client gone", 10*time.Second, func(st Status) bool { return st.NBD.Connections == 0 })
	ctl(t, b, "role", "secondary")
	ctl(t, b, "resolve", "--discard-my-data")
	ctl(t, a, "connect")
	a.waitFor("resolved", 30*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	b.waitFor("UpToDate", 30*time.Second, established)
	stopPair(t, a, b)
	if fileSum(t, b.disk) != sumA {
		t.Fatal("the node that gave in does not hold the other's data")
	}
}

// TestDiscardZeroChangesResolvesAlone: a promoted Secondary that wrote
// nothing while apart takes the Primary's data by itself.
func TestDiscardZeroChangesResolvesAlone(t *testing.T) {
	a, b, p := splitPair(t, "--after-split-brain", "discard-zero-changes")
	p.blackhole(true)
	a.waitFor("apart", 10*time.Second, apart)
	b.waitFor("apart", 10*time.Second, apart)
	ctl(t, b, "role", "primary")
	ctl(t, b, "role", "secondary")
	writeBlock(t, a, 0, 0xaa)
	p.blackhole(false)
	a.waitFor("resynced", 30*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	stopPair(t, a, b)
}

// TestInitialSyncOfIdenticalImagesMovesChecksums: two disks that hold the
// same (random) bytes but no common history are told to sync; the full
// sync compares checksums first and moves next to no data.
func TestInitialSyncOfIdenticalImagesMovesChecksums(t *testing.T) {
	a, b := newPair(t, "", nil, nil)
	data := randomBytes(64 << 20)
	for _, n := range []*node{a, b} {
		if err := os.WriteFile(n.disk, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a.start()
	b.start()
	b.waitFor("StandAlone", 10*time.Second, func(st Status) bool { return st.Peer.Connection == "StandAlone" })
	ctl(t, b, "resolve", "--discard-my-data")
	ctl(t, a, "connect")
	st := a.waitFor("synced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	t.Logf("full sync of %d bytes moved %d bytes of resync traffic", st.Size, st.Stats.ResyncBytesWire)
	if st.Stats.ResyncBytesWire == 0 || st.Stats.ResyncBytesWire*20 > uint64(st.Size) {
		t.Fatalf("resync traffic %d bytes for a %d-byte device: want under 5%%", st.Stats.ResyncBytesWire, st.Size)
	}
	stopPair(t, a, b)
}

// TestVerifyFindsAndResyncRepairs alters a block of the Secondary's disk
// behind the daemon's back: verify finds it, and the next resync repairs it.
func TestVerifyFindsAndResyncRepairs(t *testing.T) {
	a, b := connectedPair(t, "32M")
	writeBlock(t, a, 1<<20, 0x11)
	out := ctl(t, a, "verify")
	if !strings.Contains(out, "0B differ") {
		t.Fatalf("verify of an intact pair: %s", out)
	}
	f, err := os.OpenFile(b.disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xee}, 512), 5<<20+100)
	f.Close()
	out = ctl(t, a, "verify")
	if !strings.Contains(out, "64.0KiB differ") {
		t.Fatalf("verify after a block changed behind the daemon: %s", out)
	}
	if st := a.status(); st.Stats.OutOfSyncBytes != 64<<10 {
		t.Fatalf("verify marked %d bytes", st.Stats.OutOfSyncBytes)
	}
	ctl(t, a, "disconnect")
	ctl(t, a, "connect")
	a.waitFor("repaired", 30*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	stopPair(t, a, b)
}

// TestSplitBrainSeenByBoth: both nodes disconnect, the Secondary is
// promoted, both write, then both are told to connect, one right after the
// other (each goes first in turn). Whoever connects first, both must end
// StandAlone with "split brain" as the reason. 10 loops, 50 with
// NBDMIRROR_STRESS=1; a fresh pair each loop.
func TestSplitBrainSeenByBoth(t *testing.T) {
	loops := 10
	if stress() {
		loops = 50
	}
	failed := 0
	for i := range loops {
		if problem := splitBrainBothWays(t, i%2 == 0); problem != "" {
			failed++
			t.Errorf("loop %d: %s", i+1, problem)
		}
	}
	t.Logf("%d of %d loops failed", failed, loops)
}

// splitBrainBothWays makes a split brain on a fresh pair and says what went
// wrong, if anything. aFirst says which node is told to connect first.
func splitBrainBothWays(t *testing.T, aFirst bool) string {
	a, b := connectedPair(t, "16M")
	defer a.kill()
	defer b.kill()
	ctl(t, a, "disconnect")
	ctl(t, b, "disconnect")
	ctl(t, b, "role", "primary")
	writeBlock(t, a, 0, 0xaa)
	writeBlock(t, b, 4096, 0xbb)
	first, second, which := a, b, "the first Primary"
	if !aFirst {
		first, second, which = b, a, "the promoted one"
	}
	ctl(t, first, "connect")
	ctl(t, second, "connect")
	deadline := time.Now().Add(8 * time.Second)
	for {
		sa, sb := a.status(), b.status()
		if splitBrainSeen(sa) && splitBrainSeen(sb) {
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("after 8s (%s connected first): the first Primary is %s (%q), the promoted one %s (%q)\n"+
				"first Primary:\n%s\npromoted:\n%s", which, sa.Peer.Connection, sa.StandAlone,
				sb.Peer.Connection, sb.StandAlone, tail(a.logs(), 8), tail(b.logs(), 8))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func splitBrainSeen(st Status) bool {
	return st.Peer.Connection == "StandAlone" && strings.Contains(st.StandAlone, "split brain")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
