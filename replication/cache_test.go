package replication

import (
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// roleDisk is a memDisk that records what it is told about being read.
type roleDisk struct {
	memDisk
	writeOnly []bool
}

func (d *roleDisk) SetWriteOnly(on bool) { d.writeOnly = append(d.writeOnly, on) }
func (d *roleDisk) CacheDrops() uint64   { return 7 }
func (d *roleDisk) DirectWrites() uint64 { return 5 }

func TestSecondaryTellsItsDiskItIsNotRead(t *testing.T) {
	d := &roleDisk{memDisk: memDisk{journal.NewMemDisk(testSize)}}
	r, err := Open(Config{Name: "r0", Disk: d, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Secondary, Created: true, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := []bool{true}
	check := func(when string) {
		t.Helper()
		if len(d.writeOnly) != len(want) || d.writeOnly[len(want)-1] != want[len(want)-1] {
			t.Fatalf("%s: the disk was told write-only %v, want %v", when, d.writeOnly, want)
		}
	}
	check("opened as Secondary")
	if err := r.SetRole(wire.Primary, false); err != nil {
		t.Fatal(err)
	}
	want = append(want, false)
	check("promoted")
	if err := r.SetRole(wire.Secondary, false); err != nil {
		t.Fatal(err)
	}
	want = append(want, true)
	check("demoted")
	if got := r.Status().Stats.DiskCacheDrops; got != 7 {
		t.Fatalf("status disk_cache_drops %d, want the disk's 7", got)
	}
	if got := r.Status().Stats.DiskDirectWrites; got != 5 {
		t.Fatalf("status disk_direct_writes %d, want the disk's 5", got)
	}
}
