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
// memory file system) and waits until it is connected.
func openPair(t *testing.T, pfs journal.FS) *testPair {
	t.Helper()
	if pfs == nil {
		pfs = journal.NewMemFS()
	}
	secret := []byte("pair-test-secret")
	addr := freeAddr(t)
	p := &testPair{pdisk: memDisk{journal.NewMemDisk(testSize)}, sdisk: memDisk{journal.NewMemDisk(testSize)}}
	var err error
	p.secondary, err = Open(Config{Name: "r0", Disk: p.sdisk, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Secondary, Created: true, PeerListen: addr, Secret: secret, PeerTimeout: 5 * time.Second,
		CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.secondary.Close() })
	p.primary, err = Open(Config{Name: "r0", Disk: p.pdisk, MetaDir: t.TempDir(), FS: pfs,
		Role: wire.Primary, Created: true, Peer: addr, Secret: secret, PeerTimeout: 5 * time.Second,
		CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.primary.Close() })
	p.waitInSync(t)
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
// write fails while the peer journals the record. The client gets the
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
	p := openPair(t, pfs)
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
