package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

// newTestCA makes a CA for a test.
func newTestCA(t *testing.T, name string) *tlstest.CA {
	t.Helper()
	ca, err := tlstest.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// peerTLSDir writes a --peer-tls-certificates directory signed by ca for a
// node on loopback (the name each node expects of its peer, from --peer).
func peerTLSDir(t *testing.T, ca *tlstest.CA) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if err := ca.WritePeerDir(dir, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tlsPair prepares a Primary a and a Secondary b that dial each other, a
// with the TLS directory da and b with db ("" for none), both with the
// pair's secret if secret is set.
func tlsPair(t *testing.T, size, da, db string, secret bool, extra ...string) (a, b *node) {
	t.Helper()
	sf := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(sf, []byte(pairSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	la, lb := freeAddr(t), freeAddr(t)
	a, b = newNode(t, size, "--primary"), newNode(t, size, "--secondary")
	for _, n := range []struct {
		n            *node
		listen, peer string
		dir          string
	}{{a, la, lb, da}, {b, lb, la, db}} {
		n.n.peerListen = n.listen
		n.n.args = append(n.n.args, "--peer-listen", n.listen, "--peer", n.peer, "--peer-timeout", "2s")
		if secret {
			n.n.args = append(n.n.args, "--secret-file", sf)
		}
		if n.dir != "" {
			n.n.args = append(n.n.args, "--peer-tls-certificates", n.dir)
		}
		n.n.args = append(n.n.args, extra...)
	}
	return a, b
}

// TestPeerTLSPairReplicatesAndResyncs: a pair over mutual TLS, with the
// shared secret too or with TLS alone, mirrors fio's writes, resyncs what
// was written while apart, and ends with identical images.
func TestPeerTLSPairReplicatesAndResyncs(t *testing.T) {
	needTools(t, "fio")
	ca := newTestCA(t, "pair CA")
	for _, secret := range []bool{true, false} {
		name := map[bool]string{true: "with-secret", false: "tls-alone"}[secret]
		t.Run(name, func(t *testing.T) {
			a, b := tlsPair(t, "64M", peerTLSDir(t, ca), peerTLSDir(t, ca), secret)
			a.start()
			b.start()
			a.waitFor("connected", 10*time.Second, established)
			a.waitLog("peer TLS established", time.Second)
			b.waitLog("peer TLS established", time.Second)
			runFioVerify(t, a.uri(), "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=16M")
			ctl(t, b, "disconnect")
			runFio(t, a.uri(), "--rw=write", "--bs=64k", "--iodepth=8", "--size=8M", "--refill_buffers")
			ctl(t, b, "connect")
			st := a.waitFor("resynced", 30*time.Second, func(st Status) bool {
				return established(st) && st.Stats.OutOfSyncBytes == 0 && st.Stats.ResyncBytesWire > 0
			})
			t.Logf("%s: %d bytes of resync traffic", name, st.Stats.ResyncBytesWire)
			stopPair(t, a, b)
		})
	}
}

// TestPeerTLSRefusals: a node with TLS and one without, or two nodes whose
// certificates come from different CAs, never connect, and both say why.
func TestPeerTLSRefusals(t *testing.T) {
	ca, other := newTestCA(t, "pair CA"), newTestCA(t, "another CA")
	for _, c := range []struct {
		name       string
		da, db     func() string
		wantA      string
		wantB      string
		secretOnly bool
	}{
		{"plain peer", func() string { return peerTLSDir(t, ca) }, func() string { return "" },
			`reason=tls`, `reason=tls`, true},
		{"other CA", func() string { return peerTLSDir(t, ca) }, func() string { return peerTLSDir(t, other) },
			"certificate signed by unknown authority", "certificate signed by unknown authority", false},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			a, b := tlsPair(t, "16M", c.da(), c.db(), c.secretOnly)
			a.start()
			b.start()
			a.waitLog(c.wantA, 10*time.Second)
			b.waitLog(c.wantB, 10*time.Second)
			for _, n := range []*node{a, b} {
				if st := n.status(); st.Peer.Connection == "Connected" {
					t.Fatalf("connected: %+v\n%s", st, n.logs())
				}
				if strings.Contains(n.logs(), "peer connected") {
					t.Fatalf("a link came up:\n%s", n.logs())
				}
			}
			t.Logf("primary:\n%s\nsecondary:\n%s", grepLines(a.logs(), "peer"), grepLines(b.logs(), "peer"))
		})
	}
}

// grepLines returns the lines of s holding word, at most 4.
func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) && len(out) < 4 {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPeerTLSHidesTheData captures the loopback traffic of the peer link
// (both nodes' --peer-listen ports; the NBD export stays plain and is not
// captured) while fio writes a marker into the device: without TLS the
// capture holds the marker, with TLS it does not.
func TestPeerTLSHidesTheData(t *testing.T) {
	needTools(t, "fio", "tcpdump")
	const marker = "nbdmirror-marker-7f3a9c"
	ca := newTestCA(t, "pair CA")
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "tls"}[withTLS]
		t.Run(name, func(t *testing.T) {
			da, db := "", ""
			if withTLS {
				da, db = peerTLSDir(t, ca), peerTLSDir(t, ca)
			}
			// Uncompressed records: the marker goes on the link as written.
			a, b := tlsPair(t, "64M", da, db, true, "--compress", "none")
			a.start()
			b.start()
			a.waitFor("connected", 10*time.Second, established)
			pcap := capture(t, "tcp port "+port(a.peerListen)+" or tcp port "+port(b.peerListen), func() {
				runFio(t, a.uri(), "--rw=write", "--bs=64k", "--iodepth=8", "--size=4M",
					`--buffer_pattern="`+marker+`"`)
			})
			found := bytes.Contains(pcap, []byte(marker))
			t.Logf("%s: %d bytes captured, marker found: %v", name, len(pcap), found)
			if len(pcap) < 2<<20 { // the capture may lose a few packets, not most
				t.Fatalf("the capture holds %d bytes, not the 4 MiB written", len(pcap))
			}
			if found == withTLS {
				t.Fatalf("TLS %v: the marker is in the capture: %v", withTLS, found)
			}
			stopPair(t, a, b)
		})
	}
}

// capture runs tcpdump on lo with filter while during runs, and returns
// the capture file's bytes.
func capture(t *testing.T, filter string, during func()) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "peer.pcap")
	cmd := exec.Command("tcpdump", "-i", "lo", "-U", "-s", "0", "-w", file, filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	listening := make(chan struct{})
	var log bytes.Buffer
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		said := false
		for {
			n, err := stderr.Read(buf)
			log.Write(buf[:n])
			if !said && bytes.Contains(log.Bytes(), []byte("listening on")) {
				said = true
				close(listening)
			}
			if err != nil {
				cmd.Wait()
				return
			}
		}
	}()
	select {
	case <-listening:
	case <-done:
		t.Fatalf("tcpdump ended: %s", log.String())
	case <-time.After(20 * time.Second):
		t.Fatal("tcpdump does not listen after 20s")
	}
	during()
	cmd.Process.Signal(syscall.SIGINT)
	<-done
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
