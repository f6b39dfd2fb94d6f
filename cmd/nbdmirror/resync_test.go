package main

import (
	"strings"
	"testing"
	"time"
)

// TestResyncMovesWhatChanged: the Secondary is down while the Primary takes
// 32 MiB of 4 KiB random writes on a 2 GiB device. When it is back the
// images end identical and the resync moves at most twice the changed
// bytes: by the journal's tail, and, with a journal too small to hold the
// gap, by the bitmap.
func TestResyncMovesWhatChanged(t *testing.T) {
	needTools(t, "fio")
	for _, c := range []struct {
		name  string
		extra []string
		mode  string
	}{
		{"journal tail", nil, `mode="journal tail"`},
		{"bitmap", []string{"--journal-size", "16M", "--journal-retain", "4M"}, "mode=bitmap"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			a, b := newPair(t, "2G", c.extra, nil)
			a.start()
			b.start()
			a.waitFor("connected", 10*time.Second, established)
			b.kill()
			runFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=2G", "--io_size=32M",
				"--refill_buffers")
			before := a.status().Stats.ResyncBytesWire
			b.start()
			st := a.waitFor("resynced", 60*time.Second, func(st Status) bool {
				return established(st) && st.Stats.OutOfSyncBytes == 0
			})
			moved := st.Stats.ResyncBytesWire - before
			t.Logf("%s: %d bytes of resync traffic for 32 MiB written", c.name, moved)
			if moved > 64<<20 || moved < 32<<20 {
				t.Errorf("resync moved %d bytes for 32 MiB of changes", moved)
			}
			b.waitLog(c.mode, time.Second)
			stopPair(t, a, b)
		})
	}
}

// TestWritesDuringResync: the application writes while a slow resync runs;
// both end identical, and the writes read back as written (fio verify).
func TestWritesDuringResync(t *testing.T) {
	needTools(t, "fio")
	a, b := newPair(t, "64M", []string{"--resync-rate", "8M", "--journal-size", "16M", "--journal-retain", "4M"}, nil)
	writeApart(t, a, b)
	a.waitFor("SyncSource", 10*time.Second, func(st Status) bool { return st.Peer.Replication == "SyncSource" })
	runFioVerify(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=48M", "--io_size=8M")
	if st := a.status(); st.Peer.Replication != "SyncSource" {
		t.Logf("the resync ended before the writes did: %+v", st.Peer)
	}
	a.waitFor("resynced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	stopPair(t, a, b)
}

// TestInterruptedResyncResumes kills the target at about half of a bitmap
// resync; once it is back, the resync goes on with what is left.
func TestInterruptedResyncResumes(t *testing.T) {
	needTools(t, "fio")
	a, b := newPair(t, "64M", []string{"--resync-rate", "8M", "--journal-size", "16M", "--journal-retain", "4M"}, nil)
	writeApart(t, a, b)
	first := a.waitFor("half done", 30*time.Second, func(st Status) bool {
		r := st.Peer.Resync
		return r.TotalBytes > 0 && r.DoneBytes*2 >= r.TotalBytes
	})
	b.kill()
	a.waitFor("target gone", 10*time.Second, func(st Status) bool { return st.Peer.Connection != "Connected" })
	b.start()
	done := a.waitFor("resynced", 60*time.Second, func(st Status) bool { return established(st) && st.Stats.OutOfSyncBytes == 0 })
	total := first.Peer.Resync.TotalBytes
	moved := int64(done.Stats.ResyncBytesWire)
	t.Logf("resync of %d bytes, %d done when the target died; %d bytes of resync traffic in all",
		total, first.Peer.Resync.DoneBytes, moved)
	if moved > total*3/2 {
		t.Fatalf("the resync started over: %d bytes moved for a %d-byte resync", moved, total)
	}
	stopPair(t, a, b)
}

// writeApart starts the pair, writes 32 MiB on the Primary while the
// Secondary is disconnected, and connects it again: a resync begins.
func writeApart(t *testing.T, a, b *node) {
	t.Helper()
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	ctl(t, b, "disconnect")
	runFio(t, a.uri(), "--rw=write", "--bs=64k", "--iodepth=8", "--size=32M", "--refill_buffers")
	ctl(t, b, "connect")
}
