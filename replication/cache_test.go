package replication

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// dropDisk is a memDisk that counts DropCache calls.
type dropDisk struct {
	memDisk
	drops atomic.Int32
}

func (d *dropDisk) DropCache() error { d.drops.Add(1); return nil }

func openAlone(t *testing.T, d *dropDisk, role wire.Role) *Resource {
	t.Helper()
	r, err := Open(Config{Name: "r0", Disk: d, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: role, Created: true, CheckpointInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func waitDrops(t *testing.T, d *dropDisk, want int32, why string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); d.drops.Load() < want; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d DropCache calls, want %d", why, d.drops.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// A Secondary drops its disk's cache when it starts and when it is demoted;
// a Primary keeps it, checkpoint after checkpoint.
func TestOnlyASecondaryDropsItsDiskCache(t *testing.T) {
	sec := &dropDisk{memDisk: memDisk{journal.NewMemDisk(testSize)}}
	openAlone(t, sec, wire.Secondary)
	waitDrops(t, sec, 1, "a Secondary just opened")

	pri := &dropDisk{memDisk: memDisk{journal.NewMemDisk(testSize)}}
	r := openAlone(t, pri, wire.Primary)
	buf := make([]byte, 4096)
	for i := range 20 {
		if _, err := r.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		for last := r.journal.LastSeq(); r.journal.CheckpointSeq() < last; {
			time.Sleep(time.Millisecond) // until a checkpoint covers the write
		}
	}
	if n := pri.drops.Load(); n != 0 {
		t.Fatalf("a Primary dropped its cache %d times", n)
	}
	if err := r.SetRole(wire.Secondary, false); err != nil {
		t.Fatal(err)
	}
	waitDrops(t, pri, 1, "a demoted Primary")
}
