package main

import (
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitLog waits until the node's log holds s.
func (n *node) waitLog(s string, timeout time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(n.logs(), s) {
		if time.Now().After(deadline) {
			n.t.Fatalf("log never said %q:\n%s", s, n.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPeerRefusesStrangers(t *testing.T) {
	a, b := connectedPair(t, "16M")
	sumA, sumB := fileSum(t, a.disk), fileSum(t, b.disk)

	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-pair-secret"), 0o600)
	c := newNode(t, "16M", "--secondary").withPeer(freeAddr(t), a.peerListen, wrong)
	c.start()
	c.waitLog("wrong secret", 10*time.Second)
	a.waitLog("wrong secret", 10*time.Second)

	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(pairSecret), 0o600)
	d := newNode(t, "32M", "--secondary").withPeer(freeAddr(t), a.peerListen, secret)
	d.start()
	d.waitLog("other size", 10*time.Second)
	a.waitLog("other size", 10*time.Second)

	for _, junk := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), randomBytes(1 << 16)} {
		conn, err := net.Dial("tcp", a.peerListen)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(junk)
		conn.Read(make([]byte, 4096))
		conn.Close()
	}
	a.waitLog("bad magic", 10*time.Second)

	for _, n := range []*node{a, b, c, d} {
		select {
		case <-n.exited:
			t.Fatalf("a daemon stopped:\n%s", n.logs())
		default:
		}
	}
	if st := a.status(); !established(st) {
		t.Fatalf("the pair lost its link to strangers: %+v", st)
	}
	for _, n := range []*node{c, d} {
		if st := n.status(); st.Peer.Connection == "Connected" {
			t.Fatalf("a stranger connected: %+v", st)
		}
	}
	stopPair(t, a, b)
	if fileSum(t, a.disk) != sumA || fileSum(t, b.disk) != sumB {
		t.Fatal("a disk changed")
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestPrimaryGoesOnWhenSecondaryDies kills the Secondary under fio load:
// fio ends without an error, the Primary marks what the peer missed, and
// once the Secondary is back the two resync to identical images.
func TestPrimaryGoesOnWhenSecondaryDies(t *testing.T) {
	needTools(t, "fio")
	a, b := connectedPair(t, "128M")
	fio := make(chan error, 1)
	go func() {
		_, err := runCmdErr(2*time.Minute, "fio", "--name=load", "--ioengine=nbd", "--uri="+a.uri(),
			"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=128M", "--time_based", "--runtime=5",
			"--fsync=64", "--output="+filepath.Join(t.TempDir(), "fio.json"))
		fio <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	b.kill()
	if err := <-fio; err != nil {
		t.Fatalf("fio failed while the secondary died: %v", err)
	}
	st := a.status()
	if st.Peer.Connection != "Connecting" || st.Stats.OutOfSyncBytes == 0 || st.Disk != "UpToDate" || st.Peer.Disk != "DUnknown" {
		t.Fatalf("primary after the secondary died: %+v", st)
	}
	b.start()
	a.waitFor("resynced", 60*time.Second, func(st Status) bool {
		return established(st) && st.Stats.OutOfSyncBytes == 0
	})
	stopPair(t, a, b)
}

// TestLinkCutAndRestore silences the link (packets go nowhere, no reset):
// the Primary goes on alone within the peer timeout, and when the link
// comes back the nodes reconnect and resync by themselves.
func TestLinkCutAndRestore(t *testing.T) {
	needTools(t, "fio")
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(pairSecret), 0o600)
	la := freeAddr(t)
	proxy := startProxy(t, la)
	a := newNode(t, "64M", "--primary").withPeer(la, "", secret)
	b := newNode(t, "64M", "--secondary").withPeer(freeAddr(t), proxy.addr(), secret)
	a.start()
	b.start()
	a.waitFor("connected", 10*time.Second, established)

	proxy.blackhole(true)
	start := time.Now()
	runFio(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64M", "--time_based", "--runtime=4")
	st := a.waitFor("degraded", 10*time.Second, func(st Status) bool { return st.Peer.Connection != "Connected" })
	if st.Stats.OutOfSyncBytes == 0 {
		t.Fatalf("no region marked out of sync after %v: %+v", time.Since(start), st)
	}
	proxy.blackhole(false)
	a.waitFor("reconnected and resynced", 30*time.Second, func(st Status) bool {
		return established(st) && st.Stats.OutOfSyncBytes == 0
	})
	stopPair(t, a, b)
}
