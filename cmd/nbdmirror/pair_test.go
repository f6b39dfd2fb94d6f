package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	be "encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
	"github.com/nbdmirror/nbdmirror/replication"
)

// pairSecret is the secret the nodes of a test pair share.
const pairSecret = "test-pair-secret-0123456789"

// withPeer adds the flags that make n one node of a pair.
func (n *node) withPeer(listen, peer, secretFile string, extra ...string) *node {
	n.peerListen = listen
	n.args = append(n.args, "--peer-listen", listen, "--secret-file", secretFile, "--peer-timeout", "2s")
	if peer != "" {
		n.args = append(n.args, "--peer", peer)
	}
	n.args = append(n.args, extra...)
	return n
}

// newPair prepares a Primary a and a Secondary b that dial each other.
func newPair(t testing.TB, size string, extraA, extraB []string) (a, b *node) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(pairSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	la, lb := freeAddr(t), freeAddr(t)
	a = newNode(t, size, "--primary").withPeer(la, lb, secret, extraA...)
	b = newNode(t, size, "--secondary").withPeer(lb, la, secret, extraB...)
	return a, b
}

// connectedPair is newPair without extra flags, both nodes started and
// connected.
func connectedPair(t testing.TB, size string) (a, b *node) {
	t.Helper()
	a, b = newPair(t, size, nil, nil)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	return a, b
}

// waitFor polls the node's status until cond holds.
func (n *node) waitFor(what string, timeout time.Duration, cond func(Status) bool) Status {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := n.status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: not reached after %v; status %+v\n%s", what, timeout, st, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// promoteAfterKill promotes n once it has seen its killed Primary's link
// go: the killed process's connection ends at once, but a loaded machine may
// take a moment to tell n, and a promotion is refused while the peer is
// Primary and connected.
func promoteAfterKill(t *testing.T, n *node) {
	t.Helper()
	n.waitFor("the killed Primary's link gone", 30*time.Second, func(st Status) bool {
		return st.Peer.Connection != "Connected"
	})
	ctl(t, n, "role", "primary")
}

func established(st Status) bool {
	return st.Peer.Connection == "Connected" && st.Peer.Replication == "Established" &&
		st.Disk == "UpToDate" && st.Peer.Disk == "UpToDate"
}

// fileSum hashes a disk image.
func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// stopPair stops both nodes cleanly and requires identical images.
func stopPair(t *testing.T, a, b *node) {
	t.Helper()
	if code := a.stop(); code != 0 {
		t.Fatalf("primary exit %d\n%s", code, a.logs())
	}
	if code := b.stop(); code != 0 {
		t.Fatalf("secondary exit %d\n%s", code, b.logs())
	}
	if fileSum(t, a.disk) != fileSum(t, b.disk) {
		t.Fatalf("the images differ (%s)\nprimary:\n%s\nsecondary:\n%s", diffBlocks(t, a.disk, b.disk), a.logs(), b.logs())
	}
}

func TestPairMirrorsWritesIdentically(t *testing.T) {
	needTools(t, "fio")
	a, b := newPair(t, "256M", nil, nil)
	a.start()
	b.start()
	st := a.waitFor("connected", 10*time.Second, established)
	if st.Stats.ResyncBytesWire != 0 || st.Peer.Role != "Secondary" {
		t.Fatalf("two fresh devices resynced or the peer is not Secondary: %+v", st)
	}
	if sb := b.status(); sb.Role != "Secondary" || sb.Peer.Role != "Primary" || !established(sb) {
		t.Fatalf("secondary status: %+v", sb)
	}
	runFioVerify(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=64M")
	// Many writes in flight to the same few blocks: both nodes must apply
	// them in one order.
	runFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=256k", "--norandommap",
		"--time_based", "--runtime=2")
	runFio(t, a.uri(), "--rw=randwrite", "--bsrange=512-64k", "--iodepth=32", "--size=1M", "--norandommap",
		"--time_based", "--runtime=2", "--fsync=7")
	if st := a.status(); st.Stats.OutOfSyncBytes != 0 || !established(st) {
		t.Fatalf("after fio: %+v", st)
	}
	// A Primary that mirrors does not poll for requests (--nbd-poll).
	if st := a.status(); st.NBD.PolledReads != 0 || st.NBD.SleptReads == 0 {
		t.Fatalf("a mirroring Primary polled: %+v", st.NBD)
	}
	stopPair(t, a, b)
}

// With lone writes, the Primary's link polls for their acks and the
// Secondary's for their records (--peer-poll, here long enough for a slow
// host), and the Primary's polling reader sends records left for it; with
// --peer-poll 0 no link read polls or is counted, and the writers send.
func TestPairPollsForLoneWrites(t *testing.T) {
	needTools(t, "fio")
	for _, c := range []struct {
		poll   string
		polled bool
	}{{"10ms", true}, {"0", false}} {
		t.Run(c.poll, func(t *testing.T) {
			flags := []string{"--peer-poll", c.poll}
			a, b := newPair(t, "64M", flags, flags)
			a.start()
			b.start()
			a.waitFor("connected", 10*time.Second, established)
			runFioVerify(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=4M")
			for _, n := range []*node{a, b} {
				p := n.status().Peer
				if c.polled && p.PolledReads == 0 || !c.polled && p.PolledReads+p.SleptReads != 0 {
					t.Errorf("%s link reads with --peer-poll %s: %d polled, %d slept", n.status().Role, c.poll,
						p.PolledReads, p.SleptReads)
				}
			}
			if sent := a.status().Peer.ReaderSends; c.polled != (sent > 0) {
				t.Errorf("--peer-poll %s: the Primary's reader sent records %d times", c.poll, sent)
			}
			if sent := b.status().Peer.ReaderSends; sent != 0 {
				t.Errorf("the Secondary's reader sent records %d times", sent)
			}
			stopPair(t, a, b)
		})
	}
}

// TestSecondaryKeepsSmallWritesOutOfItsCache checks that the Secondary, which
// serves no reads, drops a region's cached pages before small writes there
// (not before large ones), that it makes large writes with O_DIRECT only as
// a resync's target, and that the Primary keeps its cache.
func TestSecondaryKeepsSmallWritesOutOfItsCache(t *testing.T) {
	needTools(t, "fio")
	a, b := connectedPair(t, "16M")
	runFio(t, a.uri(), "--rw=write", "--bs=1M", "--iodepth=4", "--size=16M")
	if d := b.status().Stats.DiskCacheDrops; d != 0 {
		t.Fatalf("the Secondary dropped %d regions for 1 MiB writes", d)
	}
	if n := b.status().Stats.DiskDirectWrites; n != 0 {
		t.Errorf("the Secondary made %d of the Primary's 1 MiB writes with O_DIRECT, want none", n)
	}
	ctl(t, b, "disconnect")
	runFio(t, a.uri(), "--rw=write", "--bs=1M", "--iodepth=4", "--size=16M")
	ctl(t, b, "connect")
	a.waitFor("in sync", 30*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	if n := b.status().Stats.DiskDirectWrites; n == 0 {
		t.Errorf("the Secondary, the resync's target, made none of 16 writes of 1 MiB with O_DIRECT")
	}
	if n := a.status().Stats.DiskDirectWrites; n != 0 {
		t.Errorf("the Primary made %d writes with O_DIRECT", n)
	}
	runFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=4", "--size=16M", "--io_size=2M")
	if d := b.status().Stats.DiskCacheDrops; d == 0 || d > 8 {
		t.Errorf("the Secondary dropped %d regions for 4 KiB writes into 8 regions of 2 MiB, want 1-8", d)
	}
	if d := a.status().Stats.DiskCacheDrops; d != 0 {
		t.Errorf("the Primary dropped %d regions of its cache", d)
	}
	stopPair(t, a, b)
}

func TestSecondaryRefusesNBDClients(t *testing.T) {
	_, b := connectedPair(t, "16M")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, b.nbd, "r0")
	if err == nil {
		c.Close()
		t.Fatal("the Secondary accepted an NBD client")
	}
	if !strings.Contains(err.Error(), "Secondary") {
		t.Fatalf("refusal does not say the resource is Secondary: %v", err)
	}
}

// runFio runs a fio job against uri and fails on any error.
func runFio(t *testing.T, uri string, args ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fio.json")
	base := []string{"--name=load", "--ioengine=nbd", "--uri=" + uri, "--output-format=json", "--output=" + out}
	runCmd(t, 3*time.Minute, "fio", append(base, args...)...)
	raw, _ := os.ReadFile(out)
	if !bytes.Contains(raw, []byte(`"error" : 0`)) {
		t.Fatalf("fio reported an error:\n%s", raw)
	}
}

// TestReplicationCompresses checks the bytes on the peer link against the
// bytes written: half-compressible data must shrink, random data must not
// grow by more than the framing.
func TestReplicationCompresses(t *testing.T) {
	needTools(t, "fio")
	a, b := connectedPair(t, "128M")
	var last replication.StatsStatus
	for _, c := range []struct {
		name     string
		args     []string
		maxRatio float64
	}{
		{"50% compressible", []string{"--buffer_compress_percentage=50", "--refill_buffers", "--buffer_compress_chunk=4k"}, 0.8},
		{"random", []string{"--refill_buffers"}, 1.01},
	} {
		runFio(t, a.uri(), append([]string{"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=64M"}, c.args...)...)
		st := a.status().Stats
		raw, wire := st.ReplBytesRaw-last.ReplBytesRaw, st.ReplBytesWire-last.ReplBytesWire
		last = st
		t.Logf("%s: %d raw bytes, %d on the wire (%.3f)", c.name, raw, wire, float64(wire)/float64(raw))
		if raw < 64<<20 || float64(wire) > c.maxRatio*float64(raw) {
			t.Errorf("%s: wire/raw = %d/%d, want at most %.2f", c.name, wire, raw, c.maxRatio)
		}
	}
	stopPair(t, a, b)
}

// diffBlocks says which 4 KiB blocks of two images differ.
func diffBlocks(t testing.TB, x, y string) string {
	bx, _ := os.ReadFile(x)
	by, _ := os.ReadFile(y)
	var first []int
	count := 0
	for off := 0; off+4096 <= min(len(bx), len(by)); off += 4096 {
		if !bytes.Equal(bx[off:off+4096], by[off:off+4096]) {
			count++
			if len(first) < 8 {
				first = append(first, off/4096)
				t.Logf("block %d: counters %d vs %d", off/4096, be.LittleEndian.Uint64(bx[off+16:]), be.LittleEndian.Uint64(by[off+16:]))
			}
		}
	}
	return fmt.Sprintf("%d blocks differ, first %v", count, first)
}
