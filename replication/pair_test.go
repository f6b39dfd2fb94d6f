package replication

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// testPair is a Primary and a Secondary in this process, on loopback, each
// on its own memory disk and file system.
type testPair struct {
	primary, secondary *Resource
	pdisk, sdisk       memDisk
}

// openPair opens a pair whose Primary's journal lives on pfs (nil: a
// memory file system) and waits until it is in sync.
func openPair(t *testing.T, pfs journal.FS) *testPair {
	t.Helper()
	p := openPairWith(t, testSize, func(primary, _ *Config) {
		if pfs != nil {
			primary.FS = pfs
		}
	}, nil)
	p.waitInSync(t)
	return p
}

// openPairWith opens a pair on disks of size bytes after edit changed
// their configurations; between the two Opens it calls before (if set) with
// the Secondary.
func openPairWith(t *testing.T, size int64, edit func(primary, secondary *Config), before func(*Resource)) *testPair {
	t.Helper()
	secret := []byte("pair-test-secret")
	addr := freeAddr(t)
	p := &testPair{pdisk: memDisk{journal.NewMemDisk(size)}, sdisk: memDisk{journal.NewMemDisk(size)}}
	pc := Config{Name: "r0", Disk: p.pdisk, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Primary, Created: true, Peer: addr, Secret: secret, PeerTimeout: 5 * time.Second,
		CheckpointInterval: -1}
	sc := Config{Name: "r0", Disk: p.sdisk, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Secondary, Created: true, PeerListen: addr, Secret: secret, PeerTimeout: 5 * time.Second,
		CheckpointInterval: -1}
	if edit != nil {
		edit(&pc, &sc)
	}
	var err error
	if p.secondary, err = Open(sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.secondary.Close() })
	if before != nil {
		before(p.secondary)
	}
	if p.primary, err = Open(pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.primary.Close() })
	return p
}

// waitInSync waits until the Primary sees its peer UpToDate with nothing
// out of sync, and the Secondary has applied what it journaled.
func (p *testPair) waitInSync(t *testing.T) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := p.primary.Status()
		if st.Peer.Replication == "Established" && st.Peer.Disk == "UpToDate" && st.Stats.OutOfSyncBytes == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the pair never got in sync: %+v", st)
		}
	}
	if err := p.secondary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
}

func (p *testPair) sameImages(t *testing.T) {
	t.Helper()
	if err := p.primary.journal.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.pdisk.Bytes(), p.sdisk.Bytes()) {
		t.Fatal("the images differ")
	}
}

// TestLocalJournalFailureAfterThePeerTookTheWrite: the Primary's segment
// write fails while the peer journals the record. Under --on-io-error
// pass-on (detach: see detach_test.go) the client gets the
// error, the region is marked (the peer now holds other bytes there), and
// the next resync makes both images identical.
func TestLocalJournalFailureAfterThePeerTookTheWrite(t *testing.T) {
	var failWrites atomic.Bool
	pfs := vfs.Inject(journal.NewMemFS(), func(op vfs.Op, path string) error {
		if op == vfs.OpWrite && failWrites.Load() && strings.Contains(path, "journal") {
			return syscall.EIO
		}
		return nil
	})
	p := openPairWith(t, testSize, func(pc, _ *Config) { pc.FS, pc.OnIOError = pfs, OnIOErrorPassOn }, nil)
	p.waitInSync(t)
	if _, err := p.primary.WriteAt(bytes.Repeat([]byte{0x11}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	failWrites.Store(true)
	if _, err := p.primary.WriteAt(bytes.Repeat([]byte{0x22}, 4096), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a write whose journal append failed returned %v", err)
	}
	failWrites.Store(false)
	st := p.primary.Status()
	if st.Stats.OutOfSyncBytes != 4096 || st.Peer.Disk == "UpToDate" {
		t.Fatalf("after the failed write: out of sync %d, peer disk %s", st.Stats.OutOfSyncBytes, st.Peer.Disk)
	}
	p.primary.Disconnect()
	p.primary.Connect()
	p.waitInSync(t)
	p.sameImages(t)
	if got := p.primary.disk.(memDisk).Bytes()[0]; got != 0x11 {
		t.Fatalf("the Primary holds %#x where its failed write went", got)
	}
}

// TestLinkFailureInEveryResyncPhase: the link fails while a resync replays
// the journal's tail, sends the bitmap's regions, or compares checksums,
// with a client writing all along. No write waits past the peer timeout
// (plus a margin) on any lock or on the dead link, the pair reconnects,
// and it ends with identical images.
func TestLinkFailureInEveryResyncPhase(t *testing.T) {
	for _, phase := range []string{"tail", "bitmap", "checksum"} {
		t.Run(phase, func(t *testing.T) {
			size, rate := int64(testSize), int64(64<<10) // slow: the cut lands mid-resync
			var before func(*Resource)
			if phase == "checksum" {
				// Data nobody vouched for, given up: a full sync, checksums first.
				size = 256 << 20
				before = func(s *Resource) {
					if err := s.DiscardMyData(); err != nil {
						t.Fatal(err)
					}
				}
			}
			p := openPairWith(t, size, func(pc, sc *Config) {
				pc.ResyncRate = rate
				pc.PeerTimeout, sc.PeerTimeout = 2*time.Second, 2*time.Second
				pc.Created, sc.Created = phase != "checksum", phase != "checksum" // checksum: unrelated data
			}, before)
			if phase != "checksum" {
				p.waitInSync(t)
				p.primary.Disconnect()
				for i := range 64 {
					if _, err := p.primary.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i)*8192); err != nil {
						t.Fatal(err)
					}
				}
				if phase == "bitmap" { // marks on the Secondary: the tail cannot serve it
					p.secondary.oos.mark(4096, 4096)
				}
				p.primary.Connect()
			}
			until(t, "no resync", func() bool { return p.primary.Status().Peer.Replication == "SyncSource" })
			worst := writeWhile(t, p.primary, func() {
				r := p.primary
				var l *link
				until(t, "the resync never reached the "+phase+" phase", func() bool {
					r.mu.Lock()
					defer r.mu.Unlock()
					rs := r.resync
					l = r.link
					if !rs.source || l == nil {
						return false
					}
					switch phase {
					case "tail":
						return rs.tail
					case "bitmap":
						return !rs.tail && rs.total > 0
					}
					comparing := !l.sumMu.TryLock() // compareSums holds it
					if !comparing {
						l.sumMu.Unlock()
					}
					return comparing
				})
				r.setResyncRate(0) // the resync after the cut catches up at once
				if l != nil {
					l.fail(errors.New("replication: cut by the test"))
				}
			})
			// A liveness bound: the peer timeout and a wide margin for a
			// loaded machine; a writer left on a lock waits for good.
			if limit := 2*time.Second + 3*time.Second; worst > limit {
				t.Fatalf("a write waited %v after the link failed mid-%s", worst, phase)
			}
			p.waitInSync(t)
			p.sameImages(t)
		})
	}
}

// writeWhile writes on r (in the second half of a testSize disk) from
// another goroutine while during runs, then 20 writes more, and returns the
// longest a write took.
func writeWhile(t *testing.T, r *Resource, during func()) time.Duration {
	t.Helper()
	stop := make(chan struct{})
	res := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		after := -1
		for i := 0; after != 0; i++ {
			select {
			case <-stop:
				if after < 0 {
					after = 20
				}
			default:
			}
			if after > 0 {
				after--
			}
			start := time.Now()
			if _, err := r.WriteAt(bytes.Repeat([]byte{0xee}, 4096), int64(i%128)*4096+testSize/2); err != nil {
				t.Error(err)
			}
			worst = max(worst, time.Since(start))
		}
		res <- worst
	}()
	during()
	close(stop)
	select {
	case worst := <-res:
		return worst
	case <-time.After(30 * time.Second):
		t.Fatal("a write never returned after the link failed")
	}
	return 0
}
