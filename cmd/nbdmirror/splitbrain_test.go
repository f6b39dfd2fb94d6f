package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
	"time"
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
