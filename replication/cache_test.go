package replication

import (
	"bytes"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// roleDisk is a memDisk that records what it is told about being read
// and about writing direct.
type roleDisk struct {
	memDisk
	mu        sync.Mutex
	writeOnly []bool
	direct    []bool
}

func (d *roleDisk) SetWriteOnly(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writeOnly = append(d.writeOnly, on)
}

func (d *roleDisk) SetDirect(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.direct = append(d.direct, on)
}

func (d *roleDisk) CacheDrops() uint64   { return 7 }
func (d *roleDisk) DirectWrites() uint64 { return 5 }

// lastDirect is what the disk was told last about writing direct (false
// if nothing).
func (d *roleDisk) lastDirect() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.direct) > 0 && d.direct[len(d.direct)-1]
}

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

// TestOnlyAResyncTargetWritesDirect: a Secondary's disk is told to make
// large writes direct while it is a resync's target, and buffered while it
// mirrors the Primary's writes.
func TestOnlyAResyncTargetWritesDirect(t *testing.T) {
	d := &roleDisk{memDisk: memDisk{journal.NewMemDisk(testSize)}}
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		sc.Disk = d
		pc.ResyncRate = 64 << 10 // slow: the target stays one for a while
	}, nil)
	p.waitInSync(t)
	if d.lastDirect() {
		t.Fatal("a Secondary in sync writes direct")
	}
	p.primary.Disconnect()
	for i := range testSize >> 16 {
		if _, err := p.primary.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 64<<10), int64(i)<<16); err != nil {
			t.Fatal(err)
		}
	}
	p.primary.Connect()
	until(t, "the Secondary never became the resync's target", func() bool {
		return p.secondary.Status().Peer.Replication == "SyncTarget"
	})
	if !d.lastDirect() {
		t.Fatal("a resync's target does not write direct")
	}
	p.primary.setResyncRate(0)
	p.waitInSync(t)
	until(t, "the Secondary stayed the resync's target", func() bool {
		return p.secondary.Status().Peer.Replication == "Established"
	})
	if d.lastDirect() {
		t.Fatalf("the disk still writes direct after the resync (told %v)", d.direct)
	}
}
