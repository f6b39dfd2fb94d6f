package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallExt4 mounts a fresh ext4 file system of size bytes (a sparse file on
// a loop device) on a temporary directory and returns the directory. The
// mount and the loop device go away when the test ends, after the daemons
// started later (their cleanups run first).
func smallExt4(t testing.TB, size int64) string {
	t.Helper()
	needTools(t, "losetup", "mkfs.ext4", "mount", "umount")
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(runCmd(t, 30*time.Second, "losetup", "--find", "--show", img))
	t.Cleanup(func() { runCmdErr(30*time.Second, "losetup", "-d", loop) })
	runCmd(t, time.Minute, "mkfs.ext4", "-q", "-F", loop)
	runCmd(t, time.Minute, "mount", "-t", "ext4", loop, mnt)
	t.Cleanup(func() {
		if out, err := runCmdErr(30*time.Second, "umount", mnt); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

// peerAttempts counts the peer connections the node's log tells of after
// from: those that came up and those that failed in the handshake.
func peerAttempts(log string, from time.Time) (connected, failed int) {
	for _, line := range strings.Split(log, "\n") {
		ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil || at.Before(from) {
			continue
		}
		switch {
		case strings.Contains(line, `msg="peer connected"`):
			connected++
		case strings.Contains(line, `msg="peer refused"`), strings.Contains(line, `msg="peer handshake failed"`),
			strings.Contains(line, `msg="peer not connected"`):
			failed++
		}
	}
	return connected, failed
}

// longestConnected is the longest stretch of samples that all say
// Connected.
func longestConnected(samples []sample) time.Duration {
	var longest time.Duration
	var since time.Time
	for _, s := range samples {
		if s.st.Peer.Connection != "Connected" {
			since = time.Time{}
			continue
		}
		if since.IsZero() {
			since = s.at
		}
		longest = max(longest, s.at.Sub(since))
	}
	return longest
}

// TestPeerWithFullJournalFS: the Secondary's metadata (its journal) lives on
// a 16 MiB file system that the Primary's writes fill; from then on the
// Secondary fails right after every connect. The Primary must go on
// completing writes within --peer-timeout + 1 s, say its peer is not
// Connected (no stretch of Connected longer than the peer timeout), never
// call it UpToDate with regions out of sync, and back off its redials.
func TestPeerWithFullJournalFS(t *testing.T) {
	needTools(t, "fio")
	mnt := smallExt4(t, 16<<20)
	a, b := newPair(t, "256M", nil, []string{"--meta-dir", filepath.Join(mnt, "meta")})
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)
	wa := watchNode(a)
	start := time.Now()
	fio := startFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=256M", "--refill_buffers",
		"--time_based", "--runtime=1h")
	full := waitFull(t, b, 60*time.Second)
	t.Logf("the Secondary's file system is full %v after the writes began", full.Sub(start).Round(time.Millisecond))
	const window = 10 * time.Second
	time.Sleep(window) // the scenario's length: writes go on meanwhile
	res := fio.stop(t, 2*peerTimeout)
	checkFio(t, res)
	wa.close()
	wa.check(t)
	after := wa.since(full.Add(peerTimeout))
	if l := longestConnected(after); l > peerTimeout+time.Second {
		t.Errorf("the Primary said Connected for %v on end while its peer could store nothing", l)
	}
	ok, bad := peerAttempts(a.logs(), full)
	t.Logf("in the %v after the file system filled: %d peer connections came up, %d failed in the handshake; "+
		"%d of %d status answers said Connected, the last %s/%s peer disk %s", window, ok, bad, connected(after),
		len(after), last(after).Peer.Connection, last(after).Peer.Replication, last(after).Peer.Disk)
	if ok+bad > int(3*window/time.Second) {
		t.Errorf("%d peer connections in %v: the Primary does not back off", ok+bad, window)
	}
	if t.Failed() {
		t.Logf("primary:\n%s\nsecondary:\n%s", tail(a.logs(), 40), tail(b.logs(), 40))
	}
}

// waitFull waits until the Secondary's log says its link went down on a
// full file system (not merely that a spare segment could not be made), or
// that it detached its disk for it (--on-io-error detach), and returns when.
func waitFull(t testing.TB, b *node, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(b.logs(), "\n") {
			if (strings.Contains(line, `msg="peer disconnected"`) || strings.Contains(line, `msg="disk failed: detaching it`)) &&
				strings.Contains(line, "no space left on device") {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Secondary's link never went down on a full file system:\n%s", tail(b.logs(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connected counts the samples that say Connected.
func connected(samples []sample) int {
	n := 0
	for _, s := range samples {
		if s.st.Peer.Connection == "Connected" {
			n++
		}
	}
	return n
}

func last(s []sample) Status {
	if len(s) == 0 {
		return Status{}
	}
	return s[len(s)-1].st
}
