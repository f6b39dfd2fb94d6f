package replication

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// TestPairMixedWritesInPlaceEndIdentical: small and large writes over the
// same ranges, many in flight, some FUA, then a FLUSH: both nodes end with
// the same bytes. The first writes are large, and go in place over each
// other; a large one over a small one is journaled whole
// (the disk is not synced meanwhile), on both nodes.
func TestPairMixedWritesInPlaceEndIdentical(t *testing.T) {
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		pc.JournalDataMax, sc.JournalDataMax = 64<<10, 64<<10
	}, nil)
	p.waitInSync(t)
	rnd := rand.New(rand.NewPCG(11, 12))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		n := 4 << 10
		if i < 20 || rnd.IntN(3) == 0 {
			n = 256 << 10
		}
		off := rnd.Int64N((1<<20-int64(n))/4096) * 4096 // all in the first MiB: they overlap
		data := make([]byte, n)
		for k := range data {
			data[k] = byte(i)
		}
		wg.Add(1)
		p.primary.WriteAsync(data, off, i%7 == 0, i%16 == 15, func(err error) {
			errs <- err
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.primary.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.secondary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	p.sameImages(t)
	for _, r := range []*Resource{p.primary, p.secondary} {
		if st := r.journal.Stats(); st.InPlace == 0 || st.OverlapJournaled == 0 {
			t.Fatalf("%s: %d writes in place, %d large ones journaled; want both: %+v", r.Role(), st.InPlace, st.OverlapJournaled, st)
		}
	}
}

// TestTornWriteInPlaceResynced: the Primary loses power after a write in
// place its peer acknowledged, its extent record durable, its data not.
// Recovery finds the extent torn and marks it, though the bitmap file says
// the peer holds everything up to it, and the reconnection resyncs it: the
// images end identical.
func TestTornWriteInPlaceResynced(t *testing.T) {
	var pcfg Config
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		pc.JournalDataMax, sc.JournalDataMax = 64<<10, 64<<10
		pcfg = *pc
	}, nil)
	p.waitInSync(t)
	big := bytes.Repeat([]byte{0xab}, 256<<10)
	if _, err := p.primary.WriteAt(big, 512<<10); err != nil {
		t.Fatal(err)
	}
	if err := p.primary.saveBitmap(); err != nil { // the peer holds it: nothing to mark
		t.Fatal(err)
	}
	// A FUA journaled write syncs the journal, extent record included, and
	// not the disk.
	if _, err := p.primary.WriteAtFUA(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	var fs2 *vfs.MemFS
	disk2 := p.pdisk.CrashWith(func() { fs2 = pcfg.FS.(*vfs.MemFS).CrashClone(nil) })
	p.primary.Close()
	if bytes.Equal(disk2.Bytes()[512<<10:512<<10+len(big)], big) {
		t.Fatal("the power loss kept the write in place: nothing to test")
	}
	pcfg.FS, pcfg.Disk = fs2, memDisk{disk2}
	pcfg.Created = false
	r, err := Open(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var torn []journal.Extent // the power loss reports the activity set too (Active)
	for _, e := range r.journal.RecoveredExtents() {
		if !e.Active {
			torn = append(torn, e)
		}
	}
	if len(torn) != 1 || torn[0].Offset != 512<<10 {
		t.Fatalf("recovered torn extents %+v, want the write at 512 KiB", torn)
	}
	p2 := &testPair{primary: r, secondary: p.secondary, pdisk: memDisk{disk2}, sdisk: p.sdisk}
	p2.waitInSync(t)
	p2.sameImages(t)
}

// TestTailRecordReadsTheDisk: a journal-tail resync sends a write made in
// place as a write of the bytes the disk holds.
func TestTailRecordReadsTheDisk(t *testing.T) {
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Primary, Created: true, CheckpointInterval: -1, JournalDataMax: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := bytes.Repeat([]byte("in place"), 32<<10)
	if _, err := r.WriteAt(data, 64<<10); err != nil {
		t.Fatal(err)
	}
	rd, err := r.journal.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rec, err := rd.Next()
	if err != nil || rec.Kind != journal.KindExtent {
		t.Fatalf("journal record %v %v, want an extent", rec.Kind, err)
	}
	rec, err = r.tailRecord(rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rec.Raw(nil)
	if err != nil || rec.Kind != journal.KindWrite || rec.Offset != 64<<10 || rec.Seq == 0 || !bytes.Equal(raw, data) {
		t.Fatalf("tail record %v at %d seq %d (%v), want the write's data", rec.Kind, rec.Offset, rec.Seq, err)
	}
}

// TestNoTailOverRecoveredRegions: the Primary, apart from its peer, makes a
// write durable and checkpointed (a clean stop), then writes over it inside
// its activity set, unsynced, and loses power; the kernel's write-back had
// put the newer bytes on the disk, and the journal lost their record.
// Recovery marks the activity set's extent. The journal's tail still holds
// the older write: a tail resync would send it and clear the mark, and the
// nodes would differ (meta.TailFrom keeps the tail off). They end identical.
func TestNoTailOverRecoveredRegions(t *testing.T) {
	var pcfg, scfg Config
	p := openPairWith(t, testSize, func(pc, sc *Config) { pcfg, scfg = *pc, *sc }, nil)
	p.waitInSync(t)
	p.secondary.Close()
	pfs, pdisk := pcfg.FS.(*vfs.MemFS), p.pdisk.MemDisk
	const off = 8 << 10
	if _, err := p.primary.WriteAtFUA(bytes.Repeat([]byte{1}, 4096), off); err != nil {
		t.Fatal(err)
	}
	p.primary.Close()
	pcfg.Created, scfg.Created = false, false
	open := func(c Config) *Resource {
		t.Helper()
		r, err := Open(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a := open(pcfg)
	if _, err := a.WriteAt(bytes.Repeat([]byte{3}, 4096), 64<<10); err != nil { // outside the set: it grows
		t.Fatal(err)
	}
	activity := pcfg.MetaDir + "/journal/ACTIVITY"
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		// Durably named: what a power loss now leaves names an extent.
		if b, err := vfs.ReadFile(pfs.CrashClone(nil), activity); err == nil && len(b) > 80 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no activity set published")
		}
	}
	newer := bytes.Repeat([]byte{2}, 4096)
	// Inside the published set the write is applied without a journal
	// sync: the journal loses it in the power loss. (The set is in use a
	// moment after its file is durable: until then the write is synced.)
	for end := time.Now().Add(10 * time.Second); ; {
		syncs := a.journal.Stats().Syncs
		if _, err := a.WriteAt(newer, off); err != nil {
			t.Fatal(err)
		}
		if a.journal.Stats().Syncs == syncs {
			break
		}
		if time.Now().After(end) {
			t.Fatal("every write was synced in the journal: no activity set in use")
		}
	}
	var fs2 *vfs.MemFS
	disk2 := pdisk.CrashWriteback(func() bool { return true }, func() { fs2 = pfs.CrashClone(nil) })
	a.Close()
	if got := disk2.Bytes()[off : off+4096]; !bytes.Equal(got, newer) {
		t.Fatal("the power loss did not keep the newer write on the disk: nothing to test")
	}
	pcfg.FS, pcfg.Disk = fs2, memDisk{disk2}
	a = open(pcfg)
	active := false
	for _, e := range a.journal.RecoveredExtents() {
		active = active || e.Active
	}
	if !active {
		t.Fatal("recovery reported no activity set after the power loss")
	}
	b := open(scfg)
	p2 := &testPair{primary: a, secondary: b, pdisk: memDisk{disk2}, sdisk: p.sdisk}
	p2.waitInSync(t)
	p2.sameImages(t)
}
