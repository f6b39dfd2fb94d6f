package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTailTargetPromotedMidReplay kills the source halfway through a
// journal-tail sync. The target, Consistent all along, is promoted without
// --force; its ext4 passes e2fsck after mounting, and the files it holds are
// a prefix of those written, in order.
func TestTailTargetPromotedMidReplay(t *testing.T) {
	a, b := newPair(t, "256M", []string{"--resync-rate", "1M"}, nil)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	dev := attachBlockDev(t, a.uri())
	mnt := dev.mkfsAndMount()
	runCmd(t, time.Minute, "sync")
	b.waitFor("caught up", 30*time.Second, func(st Status) bool { return st.Peer.Connection == "Connected" })

	ctl(t, b, "disconnect")
	var sums [][32]byte
	for i := range 48 {
		data := bytes.Repeat([]byte(fmt.Sprintf("file %d;", i)), 64<<10/8+i)
		f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("f%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sums = append(sums, sha256.Sum256(data))
	}
	runCmd(t, time.Minute, "sync")
	ctl(t, b, "connect")
	b.waitFor("a third through the tail", 60*time.Second, func(st Status) bool {
		r := st.Peer.Resync
		return st.Disk == "Consistent" && st.Peer.Replication == "SyncTarget" || r.TotalBytes > 0 && r.DoneBytes*3 > r.TotalBytes
	})
	time.Sleep(500 * time.Millisecond)
	a.kill()
	dev.detach()
	if st := b.status(); st.Disk != "Consistent" {
		t.Fatalf("the tail target is %s, not Consistent", st.Disk)
	}
	promoteAfterKill(t, b) // no --force: the disk is whole

	dev2 := attachBlockDev(t, b.uri())
	mnt2 := dev2.mount()
	held := 0
	for i, want := range sums {
		data, err := os.ReadFile(filepath.Join(mnt2, fmt.Sprintf("f%03d", i)))
		if err == nil && sha256.Sum256(data) == want {
			if held != i {
				t.Fatalf("f%03d is intact but f%03d is not: not a prefix", i, held)
			}
			held++
		}
	}
	for i := held + 2; i < len(sums); i++ {
		if _, err := os.Stat(filepath.Join(mnt2, fmt.Sprintf("f%03d", i))); err == nil {
			t.Fatalf("f%03d exists after the prefix of %d files", i, held)
		}
	}
	t.Logf("the promoted target holds the first %d of %d files", held, len(sums))
	dev2.umount()
	dev2.fsck()
}
