package main

import (
	"bytes"
	"context"
	"crypto/rand"
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/internal/tlstest"
	"github.com/nbdmirror/nbdmirror/nbdserver"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// tlsExport is a standalone daemon exporting with --tls require and
// --tls-verify-peer, and client directories: good (a certificate of the
// server's CA), stranger (a certificate of another CA) and anon (no
// certificate).
type tlsExport struct {
	n                    *node
	good, stranger, anon string
	host, port           string
}

func startTLSExport(t *testing.T, size string, extra ...string) tlsExport {
	t.Helper()
	ca := tlstest.NewCA(t, "nbdmirror test CA")
	n := newNode(t, size, append([]string{"--primary", "--tls", "require",
		"--tls-certificates", ca.Dir(t), "--tls-verify-peer"}, extra...)...)
	n.start()
	host, port, _ := strings.Cut(n.nbd, ":")
	return tlsExport{n: n, good: ca.ClientDir(t, nil), stranger: tlstest.NewCA(t, "another CA").ClientDir(t, ca),
		anon: ca.CADir(t), host: host, port: port}
}

// uri is the libnbd URI of the export with the client directory dir, or
// the plain nbd:// URI when dir is empty.
func (e tlsExport) uri(dir string) string {
	if dir == "" {
		return e.n.uri()
	}
	return fmt.Sprintf("nbds://%s/r0?tls-certificates=%s", e.n.nbd, dir)
}

// refused runs a client that must fail and checks it did.
func refused(t *testing.T, what string, name string, args ...string) {
	t.Helper()
	out, err := runCmdErr(time.Minute, name, args...)
	if err == nil {
		t.Errorf("%s: %s succeeded:\n%s", what, name, out)
	}
	t.Logf("%s: %s refused: %s", what, name, lastLine(out))
}

// TestTLSLibnbdClients: nbdinfo and nbdcopy over nbds:// with a client
// certificate; without TLS, without a certificate or with another CA's
// certificate they are refused.
func TestTLSLibnbdClients(t *testing.T) {
	needTools(t, "nbdinfo", "nbdcopy")
	e := startTLSExport(t, "64M")
	out := runCmd(t, time.Minute, "nbdinfo", e.uri(e.good))
	if !strings.Contains(out, "67108864") {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	src := filepath.Join(t.TempDir(), "src.img")
	data := make([]byte, 16<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, time.Minute, "nbdcopy", src, e.uri(e.good))
	back := filepath.Join(t.TempDir(), "back.img")
	runCmd(t, time.Minute, "nbdcopy", e.uri(e.good), back)
	got, _ := os.ReadFile(back)
	if len(got) != 64<<20 || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("nbdcopy read back %d bytes, differing from what it wrote", len(got))
	}
	if st := e.n.status(); st.NBD.TLSConnections < 3 {
		t.Fatalf("status counts %d TLS connections after nbdinfo and two nbdcopy", st.NBD.TLSConnections)
	}
	refused(t, "plain NBD", "nbdinfo", e.uri(""))
	refused(t, "no client certificate", "nbdinfo", e.uri(e.anon))
	refused(t, "another CA's certificate", "nbdinfo", e.uri(e.stranger))
	refused(t, "plain NBD", "nbdcopy", src, e.uri(""))
	refused(t, "another CA's certificate", "nbdcopy", src, e.uri(e.stranger))
}

// qemuNBD is qemu's --object and --image-opts for the export, TLS with the
// client directory dir unless dir is empty.
func (e tlsExport) qemuNBD(dir string) []string {
	opts := fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,export=r0", e.host, e.port)
	if dir == "" {
		return []string{"--image-opts", opts}
	}
	return []string{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir, "--image-opts", opts + ",tls-creds=tls0"}
}

// TestTLSQemuClients: qemu-io writes and reads back a pattern and qemu-img
// copies an image in, both with tls-creds-x509; without TLS or with
// another CA's certificate they are refused.
func TestTLSQemuClients(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	e := startTLSExport(t, "64M")
	io := func(dir string, cmds ...string) (string, error) {
		args := e.qemuNBD(dir)
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		return runCmdErr(time.Minute, "qemu-io", args...)
	}
	out, err := io(e.good, "write -P 0x5a 1M 4M", "read -P 0x5a 1M 4M")
	if err != nil || !strings.Contains(out, "read 4194304/4194304 bytes") || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io over TLS: %v\n%s", err, out)
	}
	src := filepath.Join(t.TempDir(), "src.raw")
	data := bytes.Repeat([]byte("qemu-img over TLS "), 1<<20/18+1)[:1<<20]
	os.WriteFile(src, data, 0o644)
	target := e.qemuNBD(e.good) // --object OBJ --image-opts OPTS
	runCmd(t, time.Minute, "qemu-img", "convert", "-n", "-f", "raw", target[0], target[1], src, "--target-image-opts", target[3])
	if out, err := io(e.good, "read -P 0x71 0 1"); err != nil || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-img convert did not land (first byte should be 'q'): %v\n%s", err, out)
	}
	for _, c := range []struct{ what, dir string }{{"plain NBD", ""}, {"another CA's certificate", e.stranger}, {"no client certificate", e.anon}} {
		if out, err := io(c.dir, "read 0 4k"); err == nil && strings.Contains(out, "read 4096/4096") {
			t.Errorf("%s: qemu-io read:\n%s", c.what, out)
		}
	}
	refused(t, "plain NBD", "qemu-img", append([]string{"info"}, e.qemuNBD("")...)...)
}

// TestTLSFio: fio's nbd engine writes and verifies through --tls require
// with a client certificate; plain NBD, and another CA's certificate, are
// refused. fio's engine takes a libnbd URI but does not let it name a local
// directory (tls-certificates=DIR needs nbd_set_uri_allow_local_file, which
// fio does not call), so the certificates are where libnbd looks without
// one: /etc/pki/libnbd for root, $HOME/.pki/libnbd for anyone else. The
// test runs fio as nobody with a home of its own, to leave /etc alone.
func TestTLSFio(t *testing.T) {
	needTools(t, "fio", "setpriv")
	e := startTLSExport(t, "64M")
	tlsURI := "nbds://" + e.n.nbd + "/r0"
	out := fioAsNobody(t, libnbdHome(t, e.good), tlsURI, "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=16M",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0")
	if !bytes.Contains(out, []byte(`"error" : 0`)) || !bytes.Contains(out, []byte(`"io_bytes" : 16777216`)) {
		t.Fatalf("fio over TLS:\n%s", out)
	}
	refused(t, "plain NBD", "fio", "--name=plain", "--ioengine=nbd", "--uri="+e.uri(""), "--rw=read", "--size=1M")
	home := libnbdHome(t, e.stranger)
	refused(t, "another CA's certificate", "setpriv", append(nobody, "env", "HOME="+home, "fio", "--name=stranger",
		"--ioengine=nbd", "--uri="+tlsURI, "--rw=read", "--size=1M")...)
}

// nobody is setpriv's arguments to run a command as user nobody.
var nobody = []string{"--reuid=65534", "--regid=65534", "--clear-groups"}

// fioAsNobody runs fio as nobody with HOME=home on uri and returns its
// JSON output.
func fioAsNobody(t *testing.T, home, uri string, args ...string) []byte {
	t.Helper()
	dir := nobodysDir(t)
	os.Chmod(dir, 0o777)
	out := filepath.Join(dir, "fio.json")
	cmd := append(nobody, "env", "HOME="+home, "fio", "--name=tls", "--ioengine=nbd", "--uri="+uri,
		"--output-format=json", "--output="+out)
	runCmd(t, 3*time.Minute, "setpriv", append(cmd, args...)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nobodysDir is a temporary directory that nobody may enter (the test's
// temporary root is 0700).
func nobodysDir(t *testing.T) string {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o711)
	os.Chmod(dir, 0o755)
	return dir
}

// libnbdHome returns a home directory, readable by all, whose .pki/libnbd
// holds the client directory dir's files.
func libnbdHome(t *testing.T, dir string) string {
	t.Helper()
	home := nobodysDir(t)
	pki := filepath.Join(home, ".pki", "libnbd")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	os.Chmod(filepath.Dir(pki), 0o755)
	for _, f := range []string{"ca-cert.pem", "client-cert.pem", "client-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pki, f), b, 0o644); err != nil { // a throwaway key nobody must read
			t.Fatal(err)
		}
	}
	return home
}

// TestTLSPSKExport: with --tls-psk (nbdkit's PSK file) nbdinfo reaches the
// export with the key of its user and is refused with another key or
// without TLS; a PSK file that others may read is refused at start.
func TestTLSPSKExport(t *testing.T) {
	needTools(t, "nbdinfo")
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const key = "0123456789abcdef0123456789abcdef"
	loose := write("loose.psk", "alice:"+key+"\n", 0o644)
	out, err := runCmdErr(time.Minute, binary, "serve", "--disk", filepath.Join(dir, "d.img"), "--size", "16M",
		"--tls", "require", "--tls-psk", loose)
	if err == nil || !strings.Contains(out, "chmod 600") {
		t.Fatalf("--tls-psk with a file others may read: %v\n%s", err, out)
	}
	n := newNode(t, "64M", "--primary", "--tls", "require", "--tls-psk", write("keys.psk", "alice:"+key+"\n", 0o600))
	n.start()
	uri := func(file string) string { return fmt.Sprintf("nbds://alice@%s/r0?tls-psk-file=%s", n.nbd, file) }
	if out := runCmd(t, time.Minute, "nbdinfo", "--size", uri(write("alice.psk", "alice:"+key+"\n", 0o600))); strings.TrimSpace(out) != "67108864" {
		t.Fatalf("nbdinfo with the key:\n%s", out)
	}
	refused(t, "another key", "nbdinfo", uri(write("wrong.psk", "alice:"+strings.Repeat("ab", 16)+"\n", 0o600)))
	refused(t, "no TLS", "nbdinfo", n.uri())
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestAttachTLSSocket: what attach hands the kernel for a TLS export, a
// Unix socket in the clear whose other end is copied to and from the TLS
// connection, carries NBD requests and replies (the ioctls themselves need
// the nbd module, which this machine lacks).
func TestAttachTLSSocket(t *testing.T) {
	ca := tlstest.NewCA(t, "attach CA")
	srvCfg, err := tlsdir.Server(ca.Dir(t), true)
	if err != nil {
		t.Fatal(err)
	}
	srv := nbdserver.New(nbdserver.Options{Name: "r0", Backend: nbdserver.NewMemBackend(1 << 20),
		TLSMode: nbdserver.TLSRequire, TLS: srvCfg})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	cfg, err := attachTLS(ca.ClientDir(t, nil), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, size, _, err := nbdclient.NegotiateTLS(ctx, nc, "r0", cfg)
	if err != nil || size != 1<<20 {
		t.Fatalf("negotiate: size %d, %v", size, err)
	}
	f, err := kernelSocket(tc)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := net.FileConn(f) // the kernel's side
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	kc.SetDeadline(time.Now().Add(10 * time.Second))
	data := bytes.Repeat([]byte("kernel"), 700)[:4096]
	req := func(typ uint16, handle uint64, payload []byte) []byte {
		h := make([]byte, 28)
		be.BigEndian.PutUint32(h[0:], 0x25609513)
		be.BigEndian.PutUint16(h[6:], typ)
		be.BigEndian.PutUint64(h[8:], handle)
		be.BigEndian.PutUint64(h[16:], 8192)
		be.BigEndian.PutUint32(h[24:], 4096)
		return append(h, payload...)
	}
	if _, err := kc.Write(append(req(1, 1, data), req(0, 2, nil)...)); err != nil {
		t.Fatal(err)
	}
	replies := make([]byte, 16+16+4096)
	if _, err := io.ReadFull(kc, replies); err != nil {
		t.Fatal(err)
	}
	if be.BigEndian.Uint32(replies[4:]) != 0 || be.BigEndian.Uint64(replies[8:]) != 1 ||
		be.BigEndian.Uint32(replies[20:]) != 0 || be.BigEndian.Uint64(replies[24:]) != 2 || !bytes.Equal(replies[32:], data) {
		t.Fatalf("replies through the TLS proxy: % x", replies[:32])
	}
}
