package replication

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// faultDisk is a memory disk whose every operation fails with EIO while
// failing is set; calls counts the operations tried meanwhile.
type faultDisk struct {
	memDisk
	failing *atomic.Bool
	calls   *atomic.Int64
}

func newFaultDisk(d memDisk) faultDisk {
	return faultDisk{memDisk: d, failing: new(atomic.Bool), calls: new(atomic.Int64)}
}

func (d faultDisk) fault() error {
	if !d.failing.Load() {
		return nil
	}
	d.calls.Add(1)
	return fmt.Errorf("fault disk: %w", syscall.EIO)
}

func (d faultDisk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.fault(); err != nil {
		return 0, err
	}
	return d.memDisk.WriteAt(p, off)
}

func (d faultDisk) ReadAt(p []byte, off int64) (int, error) {
	if err := d.fault(); err != nil {
		return 0, err
	}
	return d.memDisk.ReadAt(p, off)
}

func (d faultDisk) Trim(off, n int64) error {
	if err := d.fault(); err != nil {
		return err
	}
	return d.memDisk.Trim(off, n)
}

func (d faultDisk) Zero(off, n int64, noHole bool) error {
	if err := d.fault(); err != nil {
		return err
	}
	return d.memDisk.Zero(off, n, noHole)
}

func (d faultDisk) Sync() error {
	if err := d.fault(); err != nil {
		return err
	}
	return d.memDisk.Sync()
}

// fullFS is a memory file system that answers ENOSPC to every write,
// create and truncate under the meta directory while full is set.
func fullFS(full *atomic.Bool) vfs.FS {
	return vfs.Inject(journal.NewMemFS(), func(op vfs.Op, _ string) error {
		if full.Load() && (op == vfs.OpWrite || op == vfs.OpCreate || op == vfs.OpTruncate || op == vfs.OpSync) {
			return syscall.ENOSPC
		}
		return nil
	})
}

// stamp is block i's content in round n.
func stamp(i, n int) []byte {
	return bytes.Repeat([]byte{byte(i*7 + n + 1)}, 4096)
}

// writeRound writes blocks [0, count) with stamps of round n from 16
// writers, every fourth with FUA and a Sync after each eighth, and returns
// the first error and the longest write.
func writeRound(r *Resource, count, n int) (error, time.Duration) {
	var mu sync.Mutex
	var first error
	var longest time.Duration
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < count; i = int(next.Add(1) - 1) {
				start := time.Now()
				var err error
				if i%4 == 0 {
					_, err = r.WriteAtFUA(stamp(i, n), int64(i)*4096)
				} else {
					_, err = r.WriteAt(stamp(i, n), int64(i)*4096)
				}
				if err == nil && i%8 == 7 {
					err = r.Sync()
				}
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("block %d: %w", i, err)
				}
				longest = max(longest, time.Since(start))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first, longest
}

// holdsRound checks that disk holds round n's stamps in blocks [0, count).
func holdsRound(t *testing.T, who string, disk []byte, count, n int) {
	t.Helper()
	for i := range count {
		if !bytes.Equal(disk[i*4096:(i+1)*4096], stamp(i, n)) {
			t.Fatalf("%s: block %d does not hold round %d", who, i, n)
		}
	}
}

// failUnderWrites writes round 0 on the pair in sync, makes the Primary's
// disk fail, writes round 1 (none may fail: they go through the peer) and
// waits until the Primary is Diskless.
func failUnderWrites(t *testing.T, p *testPair, fd faultDisk) {
	t.Helper()
	p.waitInSync(t)
	if err, _ := writeRound(p.primary, 64, 0); err != nil {
		t.Fatal(err)
	}
	fd.failing.Store(true)
	if err, _ := writeRound(p.primary, 64, 1); err != nil {
		t.Fatalf("a write failed with the Primary's disk: %v", err)
	}
	untilSlow(t, "the Primary's disk never became Diskless", func() bool { return p.primary.Status().Disk == "Diskless" })
}

// TestPrimaryDiskFailureDetachesAndGoesOnThroughThePeer: the Primary's
// disk fails on every operation under 16 writers. No write fails: the
// disk is detached (Failed, then Diskless, with its first error in
// status), nothing more is written to it, and every write after it goes to
// the peer only, which holds them all. Without its peer, the Diskless
// Primary's writes and flushes fail with EIO.
func TestPrimaryDiskFailureDetachesAndGoesOnThroughThePeer(t *testing.T) {
	p, fd := openPairFaultyPrimary(t, OnIOErrorDetach)
	failUnderWrites(t, p, fd)
	st := p.primary.Status()
	if st.DiskError == nil || !strings.Contains(st.DiskError.Error, "input/output error") || st.DiskError.Time.IsZero() {
		t.Fatalf("disk_error %+v", st.DiskError)
	}
	if st.Peer.Connection != "Connected" {
		t.Fatalf("the Diskless Primary lost its peer: %+v", st.Peer)
	}
	tried := fd.calls.Load()
	if err, _ := writeRound(p.primary, 64, 2); err != nil {
		t.Fatalf("a write of the Diskless Primary failed: %v", err)
	}
	if err := p.primary.Sync(); err != nil {
		t.Fatalf("flush of the Diskless Primary: %v", err)
	}
	if n := fd.calls.Load(); n != tried {
		t.Fatalf("the detached disk was used %d more times", n-tried)
	}
	if err := p.secondary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	holdsRound(t, "the Secondary", p.sdisk.Bytes(), 64, 2)
	if errs := p.primary.DiskErrors(); len(errs) == 0 || errs[0].Count == 0 {
		t.Fatalf("disk errors counted: %+v", errs)
	}

	p.primary.Disconnect()
	if _, err := p.primary.WriteAt(stamp(0, 3), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a Diskless Primary's write without a peer: %v", err)
	}
	if err := p.primary.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a Diskless Primary's flush without a peer: %v", err)
	}
}

// TestPassOnGivesTheClientTheErrorAndMarks: with --on-io-error pass-on the
// write that meets the fault fails, the disk stays UpToDate with the first
// error in status, and the region is marked: the peer took the write.
func TestPassOnGivesTheClientTheErrorAndMarks(t *testing.T) {
	p, fd := openPairFaultyPrimary(t, OnIOErrorPassOn)
	p.waitInSync(t)
	fd.failing.Store(true)
	if _, err := p.primary.WriteAt(stamp(1, 1), 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("pass-on: the failing write returned %v", err)
	}
	st := p.primary.Status()
	if st.Disk != "UpToDate" || st.DiskError == nil || st.Stats.OutOfSyncBytes == 0 {
		t.Fatalf("pass-on: disk %s, disk_error %+v, out of sync %d", st.Disk, st.DiskError, st.Stats.OutOfSyncBytes)
	}
}

// untilSlow is until with a deadline a loaded test machine meets (a tail
// resync of 64 writes took 8 s at a load of 15).
func untilSlow(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(what)
		}
	}
}

// slowMachine gives a pair a peer timeout no loaded test machine reaches:
// a write lost with the link would fail where the test says none may.
func slowMachine(pc, sc *Config) {
	pc.PeerTimeout, sc.PeerTimeout = time.Minute, time.Minute
}

// countingListen counts the connections a listener accepts.
func countingListen(n *atomic.Int64) func(string) (net.Listener, error) {
	return func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		return countingListener{ln, n}, err
	}
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestSecondaryJournalFullGoesDisklessWithoutAStorm: the Secondary's
// journal file system fills up under the Primary's writers. No write of
// the Primary fails or waits as long as the peer timeout; the Secondary
// goes Diskless and StandAlone with the reason, refuses its Primary, which
// goes on alone (marking) and dials it again at its slowest pace, not in a
// storm. Once space is freed, disk attach brings the same disk back by a
// bitmap resync; a fresh disk after it comes back by a full sync. Both
// end with the Primary's image.
func TestSecondaryJournalFullGoesDisklessWithoutAStorm(t *testing.T) {
	var full atomic.Bool
	var accepts atomic.Int64
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		sc.FS, sc.Listen = fullFS(&full), countingListen(&accepts)
		pc.PeerTimeout, sc.PeerTimeout = 2*time.Second, 2*time.Second
	}, nil)
	p.waitInSync(t)
	full.Store(true)
	for n := range 3 {
		err, longest := writeRound(p.primary, 64, n)
		if err != nil || longest >= 2*time.Second {
			t.Fatalf("round %d with the Secondary's journal full: %v, longest write %v", n, err, longest)
		}
	}
	untilSlow(t, "the Secondary never went Diskless", func() bool { return p.secondary.Status().Disk == "Diskless" })
	st := p.secondary.Status()
	if st.Peer.Connection != "StandAlone" || !strings.Contains(st.StandAlone, "no space left") || st.DiskError == nil {
		t.Fatalf("the Diskless Secondary: %s, %q, %+v", st.Peer.Connection, st.StandAlone, st.DiskError)
	}
	before := accepts.Load()
	err, longest := writeRound(p.primary, 64, 3)
	if err != nil || longest >= 2*time.Second {
		t.Fatalf("the Primary alone: %v, longest write %v", err, longest)
	}
	time.Sleep(2 * time.Second) // the dial pace is what is measured
	if n := accepts.Load() - before; n > 2 {
		t.Fatalf("%d connections in 2 s to a Diskless Secondary", n)
	}
	if pst := p.primary.Status(); pst.Peer.Connection == "Connected" || pst.Stats.OutOfSyncBytes == 0 {
		t.Fatalf("the Primary: %s, out of sync %d", pst.Peer.Connection, pst.Stats.OutOfSyncBytes)
	}

	full.Store(false)
	if err := p.secondary.AttachDisk(p.sdisk, false); err != nil {
		t.Fatal(err)
	}
	p.waitInSync(t)
	p.sameImages(t)
	holdsRound(t, "the Secondary", p.sdisk.Bytes(), 64, 3)

	if err := p.secondary.DetachDisk(); err != nil {
		t.Fatal(err)
	}
	untilSlow(t, "the Primary stayed connected", func() bool { return p.primary.Status().Peer.Connection != "Connected" })
	fresh := memDisk{journal.NewMemDisk(testSize)}
	if err := p.secondary.AttachDisk(fresh, true); err != nil {
		t.Fatal(err)
	}
	p.waitInSync(t)
	p.sdisk = fresh
	p.sameImages(t)
	if st := p.secondary.Status(); st.Disk != "UpToDate" || st.DiskError != nil || st.Role != wire.Secondary.String() {
		t.Fatalf("after attaching a fresh disk: %+v", st)
	}
}

// TestDisklessPrimaryReadsAndTakesADiskWhileInUse: a Primary whose disk
// failed reads every acknowledged write through its peer; a fresh disk
// attached while 16 writers go on is filled from the peer, and the
// Primary ends UpToDate with the peer's image, writes made during the
// attach included.
func TestDisklessPrimaryReadsAndTakesADiskWhileInUse(t *testing.T) {
	p, fd := openPairFaultyPrimary(t, OnIOErrorDetach)
	p.waitInSync(t)
	fd.failing.Store(true)
	if err, _ := writeRound(p.primary, 64, 1); err != nil {
		t.Fatal(err)
	}
	untilSlow(t, "the Primary's disk never became Diskless", func() bool { return p.primary.Status().Disk == "Diskless" })
	buf := make([]byte, 64*4096)
	if _, err := p.primary.ReadAt(buf, 0); err != nil {
		t.Fatalf("a read of the Diskless Primary: %v", err)
	}
	holdsRound(t, "reads of the Diskless Primary", buf, 64, 1)

	fresh := memDisk{journal.NewMemDisk(testSize)}
	attached := make(chan error, 1)
	go func() { attached <- p.primary.AttachDisk(fresh, true) }()
	if err, _ := writeRound(p.primary, 64, 2); err != nil {
		t.Fatalf("a write during the attach: %v", err)
	}
	if err := <-attached; err != nil {
		t.Fatal(err)
	}
	if err, _ := writeRound(p.primary, 32, 3); err != nil {
		t.Fatal(err)
	}
	if st := p.primary.Status(); st.Disk != "UpToDate" || st.DiskError != nil {
		t.Fatalf("after the attach: disk %s, disk_error %+v", st.Disk, st.DiskError)
	}
	if err := p.secondary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	p.pdisk = fresh
	p.sameImages(t)
	img := fresh.Bytes()
	holdsRound(t, "the new disk", img, 32, 3)
	for i := 32; i < 64; i++ {
		if !bytes.Equal(img[i*4096:(i+1)*4096], stamp(i, 2)) {
			t.Fatalf("the new disk: block %d does not hold the write made during the attach", i)
		}
	}
}

// TestNodeStartsDisklessWhenItsJournalCannotOpen: a Secondary whose
// journal's file system is full cannot even write its checkpoint at
// start. Under detach it starts all the same, Diskless and StandAlone
// with the reason; once space is freed, disk attach recovers the journal
// onto the disk, and the node is UpToDate.
func TestNodeStartsDisklessWhenItsJournalCannotOpen(t *testing.T) {
	var full atomic.Bool
	disk := memDisk{journal.NewMemDisk(testSize)}
	c := Config{Name: "r0", Disk: disk, MetaDir: t.TempDir(), FS: fullFS(&full), Role: wire.Secondary,
		Created: true, CheckpointInterval: -1, PeerListen: freeAddr(t), Secret: []byte("s")}
	r, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	if r, err = Open(c); err != nil {
		t.Fatalf("a node whose journal's file system is full does not start: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	st := r.Status()
	if st.Disk != "Diskless" || st.DiskError == nil || st.Peer.Connection != "StandAlone" || st.StandAlone == "" {
		t.Fatalf("started on a full file system: %+v", st)
	}
	full.Store(false)
	if err := r.AttachDisk(disk, false); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Disk != "UpToDate" || st.DiskError != nil || st.Peer.Connection == "StandAlone" {
		t.Fatalf("after disk attach: %+v", st)
	}
}

// TestDiskFaultDecisions: which errors are disk faults, what the policy
// does with the first and later ones, and the disk state status shows.
func TestDiskFaultDecisions(t *testing.T) {
	for _, c := range []struct {
		err   error
		fault bool
	}{
		{fmt.Errorf("journal: apply seq 3 to disk: %w", syscall.EIO), true},
		{fmt.Errorf("write meta.json: %w", syscall.ENOSPC), true},
		{syscall.EROFS, true},
		{syscall.EDQUOT, true},
		{journal.ErrClosed, false},
		{syscall.EINVAL, false},
		{ErrNotPrimary, false},
		{nil, false},
	} {
		if got := diskFault(c.err); got != c.fault {
			t.Errorf("diskFault(%v) = %v", c.err, got)
		}
	}
	for _, c := range []struct {
		policy              OnIOError
		phase               diskPhase
		detach, throughPeer bool
	}{
		{OnIOErrorDetach, diskAttached, true, true},  // the first fault takes the disk out
		{OnIOErrorDetach, diskFaulted, false, true},  // later ones: already going
		{OnIOErrorDetach, diskDiskless, false, true}, // a write that met the failed journal
		{OnIOErrorPassOn, diskAttached, false, false},
	} {
		detach, through := onDiskFault(c.policy, c.phase)
		if detach != c.detach || through != c.throughPeer {
			t.Errorf("onDiskFault(%s, %d) = %v, %v", c.policy, c.phase, detach, through)
		}
	}
	for phase, want := range map[diskPhase]string{diskAttached: "UpToDate", diskFaulted: "Failed",
		diskDiskless: "Diskless", diskAttaching: "Diskless"} {
		if got := diskStateName(phase, "UpToDate"); got != want {
			t.Errorf("diskStateName(%d) = %s, want %s", phase, got, want)
		}
	}
	for _, s := range []string{"detach", "pass-on"} {
		if p, err := ParseOnIOError(s); err != nil || p.String() != s {
			t.Errorf("ParseOnIOError(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseOnIOError("panic"); err == nil {
		t.Error("ParseOnIOError accepted panic")
	}
}

// TestDiskFailsInAResync: the disk fails on the resync's target, then on
// its source. The target goes Diskless and StandAlone and its Primary
// writes on alone; once healed, disk attach resyncs it: no client write
// fails, and the pair ends with identical images. A source whose disk
// fails under the resync's reads goes Diskless: it writes on through its
// peer if that followed it into its new generation, and is refused by a
// peer still in an older one, which lacks what it wrote apart.
func TestDiskFailsInAResync(t *testing.T) {
	var pd, sd faultDisk
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		pd, sd = newFaultDisk(pc.Disk.(memDisk)), newFaultDisk(sc.Disk.(memDisk))
		pc.Disk, sc.Disk = pd, sd
		// Long enough for a loaded machine, short enough for a link
		// teardown that waits its peer timeout (seen once on disconnect).
		pc.PeerTimeout, sc.PeerTimeout = 10*time.Second, 10*time.Second
	}, nil)
	p.waitInSync(t)
	apart := func(n int) {
		p.primary.Disconnect()
		if err, _ := writeRound(p.primary, 64, n); err != nil {
			t.Fatal(err)
		}
	}
	apart(0)
	sd.failing.Store(true) // the target's applies fail
	p.primary.Connect()
	untilSlow(t, "the target never went Diskless", func() bool { return p.secondary.Status().Disk == "Diskless" })
	if err, _ := writeRound(p.primary, 64, 1); err != nil {
		t.Fatalf("the Primary, its resync target failed: %v", err)
	}
	sd.failing.Store(false)
	if err := p.secondary.AttachDisk(sd, false); err != nil {
		t.Fatal(err)
	}
	p.waitInSync(t)
	p.sameImages(t)

	apart(2)
	p.secondary.oos.mark(4096, 4096) // the tail cannot serve it: a bitmap resync reads the disk
	pd.failing.Store(true)           // the source's reads fail
	p.primary.Connect()
	untilSlow(t, "the source never went Diskless", func() bool { return p.primary.Status().Disk == "Diskless" })
	if st := p.primary.Status(); st.DiskError == nil || st.DiskError.Operation != OpRead && st.DiskError.Operation != OpJournal {
		t.Fatalf("disk_error %+v", st.DiskError)
	}
	// Its target lacks what it wrote apart, which only its disk holds.
	// Where the resync's failure took the link before the word that the
	// disk is out, the target is in an older generation than the one the
	// disk left: the two refuse each other, and both say why. Where the
	// word got through, the target followed it into its new generation
	// and they connect again.
	untilSlow(t, "the Diskless source neither connected again nor was refused", func() bool {
		ps, ss := p.primary.Status(), p.secondary.Status()
		refused := strings.Contains(ps.StandAlone, "only this Diskless Primary's detached disk holds") &&
			strings.Contains(ss.StandAlone, "Diskless Primary") // its own words, or the peer's
		return refused || p.primary.Mirroring()
	})
	if err, _ := writeRound(p.primary, 64, 3); err != nil {
		// The only copy of the writes made apart is gone with the
		// source's disk: the Diskless Primary must say so rather than
		// serve.
		if !strings.Contains(err.Error(), "no UpToDate peer") {
			t.Fatalf("the Diskless Primary: %v", err)
		}
		t.Logf("the Diskless Primary refuses, its peer %s: %v", p.secondary.Status().Disk, err)
		return
	}
	if err := p.secondary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	holdsRound(t, "the peer of the Diskless Primary", p.sdisk.Bytes(), 64, 3)
}

func openPairFaultyPrimary(t *testing.T, onIOError OnIOError) (*testPair, faultDisk) {
	t.Helper()
	var fd faultDisk
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		fd = newFaultDisk(pc.Disk.(memDisk))
		pc.Disk, pc.OnIOError = fd, onIOError
		slowMachine(pc, sc)
	}, nil)
	return p, fd
}

// TestFreshDiskOnAPairThatNeverMovedOn: a fresh disk attached to a node
// whose peer never left the generation the pair was created in (GenZero:
// written ever since, never apart; both Secondary) takes the peer's data.
// The ids alone take such a peer for a new device and the fresh disk for
// the source; the side that gave in is never the source.
func TestFreshDiskOnAPairThatNeverMovedOn(t *testing.T) {
	p := openPairWith(t, testSize, slowMachine, nil)
	p.waitInSync(t)
	if err, _ := writeRound(p.primary, 64, 1); err != nil {
		t.Fatal(err)
	}
	p.waitInSync(t)
	if err := p.primary.SetRole(wire.Secondary, false); err != nil {
		t.Fatal(err)
	}
	if g := p.secondary.Status().Gen.Current; g != GenZero {
		t.Fatalf("the peer's generation %x, want GenZero", g)
	}
	if err := p.primary.DetachDisk(); err != nil {
		t.Fatal(err)
	}
	fresh := memDisk{journal.NewMemDisk(testSize)}
	if err := p.primary.AttachDisk(fresh, true); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := p.primary.Status()
		if st.Disk == "UpToDate" && st.Peer.Replication == "Established" && st.Stats.OutOfSyncBytes == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the fresh disk never got in sync: %s", brief(st))
		}
	}
	if err := p.primary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	holdsRound(t, "the peer", p.sdisk.Bytes(), 64, 1)
	holdsRound(t, "the fresh disk", fresh.Bytes(), 64, 1)
}

func brief(st Status) string {
	return fmt.Sprintf("%s/%s peer %s %s %s oos=%d", st.Role, st.Disk, st.Peer.Connection, st.Peer.Disk,
		st.Peer.Replication, st.Stats.OutOfSyncBytes)
}

// TestRestartOnAFailedDiskIsOutdated: the Primary's disk fails and its
// writes go on through the peer. Restarted on that disk (healed) while the
// peer is away, the node says the disk is Outdated, not UpToDate, and
// refuses a promotion without --force: promoted, it would serve data
// without the writes only the peer took. Met again, the peer (now Primary)
// brings it up to date.
func TestRestartOnAFailedDiskIsOutdated(t *testing.T) {
	var fd faultDisk
	var pc, sc Config
	p := openPairWith(t, testSize, func(a, b *Config) {
		fd = newFaultDisk(a.Disk.(memDisk))
		a.Disk, a.OnIOError = fd, OnIOErrorDetach
		slowMachine(a, b)
		pc, sc = *a, *b
	}, nil)
	failUnderWrites(t, p, fd)
	p.secondary.Close()
	p.primary.Close()
	fd.failing.Store(false)

	pc.Role, pc.Created = wire.Secondary, false
	a, err := Open(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if d := a.Status().Disk; d != "Outdated" {
		t.Fatalf("restarted on the disk that failed: %s, want Outdated", d)
	}
	if err := a.SetRole(wire.Primary, false); !errors.Is(err, ErrRefused) {
		t.Fatalf("promotion of the Outdated disk: %v, want refused", err)
	}
	sc.Role, sc.Created = wire.Primary, false
	b, err := Open(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	untilSlow(t, "the restarted node never became UpToDate", func() bool {
		st := a.Status()
		return st.Disk == "UpToDate" && st.Peer.Connection == "Connected"
	})
	if err := a.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	holdsRound(t, "the restarted node", p.pdisk.Bytes(), 64, 1)
}

// TestSourceSendsRecordsThePeerLost: a Secondary's disk fails applying a
// record it journaled, and it takes the disk back. Its Primary lost that
// record meanwhile (its journal failed, a crash followed) and comes back a
// Secondary, with marks of its own and an older last seq. The node holding
// the record becomes the source of a bitmap resync (the lower node id), and
// the record's region is sent: the attach marks it (the replay puts the
// record on the disk, whose apply had failed), and the record counts in
// peerSeq once journaled, so the node marks it as it meets the peer too.
func TestSourceSendsRecordsThePeerLost(t *testing.T) {
	secret, addr := []byte("pair-test-secret"), freeAddr(t)
	fd := newFaultDisk(memDisk{journal.NewMemDisk(testSize)})
	sec, err := Open(Config{Name: "r0", Disk: fd, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Secondary, Created: true, PeerListen: addr, Secret: secret, PeerTimeout: 10 * time.Second,
		CheckpointInterval: -1, OnIOError: OnIOErrorDetach})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sec.Close() })
	p := dialSecondary(t, addr, secret)
	send := func(seq uint64, off int64, b byte) {
		rec := journal.NewCompressor(journal.CodecNone).Write(off, bytes.Repeat([]byte{b}, 4096))
		rec.Seq = seq
		body := wire.AppendRecord(nil, &rec, seq-1)
		frame, _ := wire.AppendRecordsHeader(nil, [][]byte{body})
		if _, err := p.conn.Write(append(frame, body...)); err != nil {
			t.Fatal(err)
		}
	}
	send(1, 0, 0x11)
	until(t, "the first record was never applied", func() bool { return sec.journal.Stats().AppliedSeq >= 1 })
	fd.failing.Store(true)
	send(2, 64<<10, 0x22)
	until(t, "the disk never went out", func() bool { return sec.Status().Disk == "Diskless" })
	p.conn.Close()
	fd.failing.Store(false)
	if err := sec.AttachDisk(fd, false); err != nil {
		t.Fatal(err)
	}
	if got := fd.Bytes()[64<<10]; got != 0x22 {
		t.Fatalf("the attached disk holds %#x where the record replayed, not 0x22: nothing to test", got)
	}
	if !sec.oos.anySet(64<<10, 4096) || sec.oos.anySet(0, 4096) {
		t.Fatalf("after the attach, marked %d bytes: want the region the replay wrote (its apply had failed), not the one applied before",
			sec.oos.bytes())
	}

	old := dialAs(t, addr, secret, wire.Hello{Resource: "r0", Size: testSize, NodeID: math.MaxUint64,
		Role: wire.Secondary, Disk: wire.UpToDate, Gen: wire.GenIDs{Current: GenZero},
		LastSeq: 1, LostFrom: 2, Flags: wire.HasOutOfSync})
	var sent []int64
	for prev := uint64(0); ; {
		f, err := old.r.Next()
		if err != nil {
			t.Fatalf("the old Primary: %v", err)
		}
		switch f.Type {
		case wire.TypeSyncStart:
			start, err := wire.ParseSyncStart(f.Flags, f.Body)
			if err != nil || start.Mode != wire.SyncBitmap || start.Full {
				t.Fatalf("sync start %+v, %v: want a bitmap resync from the node holding the record", start, err)
			}
			old.conn.Write(wire.AppendBitmapEnd(nil)) // none of its marks are here
		case wire.TypeRecords:
			prev = eachRecord(t, f.Body, prev, func(rec journal.Record) { sent = append(sent, rec.Offset) })
			old.conn.Write(wire.AppendAck(nil, wire.Ack{Kind: wire.Journaled, Seq: prev}))
		}
		if f.Type == wire.TypeSyncDone {
			break
		}
	}
	if !slices.Contains(sent, 64<<10) {
		t.Fatalf("the resync sent the regions at %v; want the record's, at 64 KiB", sent)
	}
}

// TestResyncSendsNothingOverAWriteTheDiskLost: a FUA write lands in a
// region a bitmap resync is about to send, and its segment write fails on
// the source after the write went to the peer. The run, read from a disk
// that lacks the write, must not follow it to the peer, which holds the
// only copy. The fake peer acknowledges the run before it syncs the write,
// so that the write's reply comes after the run cleared the last mark:
// the write then succeeds through the peer, which must still hold it.
func TestResyncSendsNothingOverAWriteTheDiskLost(t *testing.T) {
	var failing atomic.Bool
	failed := make(chan struct{}) // closed at the first segment write failed
	var failOnce sync.Once
	fs := vfs.Inject(journal.NewMemFS(), func(op vfs.Op, path string) error {
		if failing.Load() && op == vfs.OpWrite && strings.HasSuffix(path, ".seg") {
			failOnce.Do(func() { close(failed) })
			return syscall.EIO
		}
		return nil
	})
	fp := newFakePeer(t)
	secret := []byte("protocol-test-secret")
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: fs, Role: wire.Primary, Created: true, Peer: fp.ln.Addr().String(), Secret: secret,
		PeerTimeout: 10 * time.Second, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fp.accept(secret)
	until(t, "no link after the agreement", func() bool { return r.currentLink() != nil })

	const off = 8 << 10
	written := bytes.Repeat([]byte{0x5a}, 4096)
	reply := make(chan error, 1)
	var once sync.Once
	testHookRunSend = func(runOff, n int64) {
		if off < runOff || off >= runOff+n {
			return
		}
		once.Do(func() {
			failing.Store(true)
			go func() { _, err := r.WriteAtFUA(written, off); reply <- err }()
			// Its segment write fails after it is appended; the send's
			// wait for it sees the loss (the journal notes it first).
			select {
			case <-failed:
			case <-time.After(5 * time.Second):
			}
		})
	}
	t.Cleanup(func() { testHookRunSend = nil })
	r.oos.mark(0, 64<<10) // a resync pass starts (markLoop)

	frames := make(chan wire.Frame)
	go func() {
		defer close(frames) // the Primary took the link down, or the test ended
		for {
			f, err := fp.r.Next()
			if err != nil {
				return
			}
			frames <- wire.Frame{Type: f.Type, Flags: f.Flags, Body: bytes.Clone(f.Body)}
		}
	}()
	var held []byte // what the peer holds at off
	var writeSeq, lastSeq uint64
	handle := func(f wire.Frame) {
		switch f.Type {
		case wire.TypeSyncStart:
			fp.conn.Write(wire.AppendBitmapEnd(nil)) // none of its marks are here
		case wire.TypeRecords:
			lastSeq = eachRecord(t, f.Body, lastSeq, func(rec journal.Record) {
				if rec.Offset > off || rec.Offset+int64(rec.RawLen) <= off {
					return
				}
				data, err := rec.Raw(nil)
				if err != nil {
					t.Fatal(err)
				}
				held = data[off-rec.Offset : off-rec.Offset+4096]
				if writeSeq != 0 {
					t.Errorf("seq %d [%d, +%d) came after the write (seq %d) the source lost, with data %#x",
						rec.Seq, rec.Offset, rec.RawLen, writeSeq, held[0])
				} else if bytes.Equal(held, written) {
					writeSeq = rec.Seq
				}
			})
			fp.ack(wire.Journaled, lastSeq) // not synced yet: the write waits
		case wire.TypeSyncDone:
			gen, _ := wire.ParseSyncDone(f.Body)
			fp.conn.Write(wire.AppendSyncDone(nil, gen)) // the resync ends, then the write is synced
			fp.ack(wire.Synced, lastSeq)
		case wire.TypePing: // behind the word that the disk is out: the peer follows
			token, _ := wire.ParsePing(f.Body)
			fp.conn.Write(wire.AppendPong(nil, token))
		}
	}
	var replied error
	timeout := time.After(10 * time.Second)
loop:
	for {
		select {
		case replied = <-reply:
			break loop
		case f, ok := <-frames:
			if ok {
				handle(f)
				continue
			}
			select { // the Primary took the link down
			case replied = <-reply:
			case <-timeout:
				t.Fatal("the write never replied")
			}
			break loop
		case <-timeout:
			t.Fatal("the write never replied")
		}
	}
	if writeSeq == 0 {
		t.Fatal("the write never reached the peer: nothing to test")
	}
	if replied == nil && !bytes.Equal(held, written) {
		t.Fatalf("the write succeeded, and the peer, which holds its only copy, holds %#x", held[0])
	}
	t.Logf("the write's reply: %v", replied)
}
