package nbdserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/testtools"
	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/internal/tlspsk"
	"github.com/nbdmirror/nbdmirror/internal/tlstest"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// tlsFixture is a server certificate directory and client configurations:
// one with a certificate of the server's CA, one without a certificate, one
// with a certificate of another CA.
type tlsFixture struct {
	server                 *tls.Config
	client, anon, stranger *tls.Config
}

func newTLSFixture(t *testing.T) tlsFixture {
	t.Helper()
	dir := tlstest.NewCA(t, "nbd CA").Dir(t)
	srv, err := tlsdir.Server(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tlsdir.Client(dir)
	if err != nil {
		t.Fatal(err)
	}
	anon := client.Clone()
	anon.Certificates = nil
	other := tlstest.NewCA(t, "another CA")
	cc, ck := other.Issue(t, "stranger", false)
	cert, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	stranger := client.Clone()
	stranger.Certificates = []tls.Certificate{cert}
	return tlsFixture{server: srv, client: client, anon: anon, stranger: stranger}
}

func dialTLS(addr string, cfg *tls.Config) (*nbdclient.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return nbdclient.DialTLS(ctx, addr, "disk", cfg)
}

// TestTLSModes connects with and without TLS, and with the wrong
// credentials, to a server in each mode.
func TestTLSModes(t *testing.T) {
	f := newTLSFixture(t)
	for _, tc := range []struct {
		mode                                  TLSMode
		plain, withCert, noCert, otherCAsCert bool // does the connection work
	}{
		{TLSOff, true, false, false, false},
		{TLSOn, true, true, false, false},
		{TLSRequire, false, true, false, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			o := Options{Backend: NewMemBackend(testSize), TLSMode: tc.mode}
			if tc.mode != TLSOff {
				o.TLS = f.server
			}
			_, addr := startServer(t, o)
			for _, c := range []struct {
				name string
				cfg  *tls.Config
				ok   bool
			}{
				{"plain", nil, tc.plain}, {"client certificate", f.client, tc.withCert},
				{"no client certificate", f.anon, tc.noCert}, {"other CA's certificate", f.stranger, tc.otherCAsCert},
			} {
				cl, err := dialTLS(addr, c.cfg)
				if err == nil {
					err = writeReadBack(cl, 4096, 64<<10, 0)
					cl.Close()
				}
				if (err == nil) != c.ok {
					t.Errorf("%s: err %v, want success %v", c.name, err, c.ok)
				}
			}
		})
	}
}

// TestTLSRequiredRefusesOptions checks FORCEDTLS: before STARTTLS every
// option but ABORT is refused with NBD_REP_ERR_TLS_REQD (and EXPORT_NAME,
// which cannot be refused, closes), and STARTTLS twice is invalid.
func TestTLSRequiredRefusesOptions(t *testing.T) {
	f := newTLSFixture(t)
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize), TLSMode: TLSRequire, TLS: f.server})
	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	var got []string
	for _, opt := range []uint32{optList, optInfo, optGo, optStructuredReply, 42} {
		r.send(optionBytes(opt, infoData("disk")))
		got = append(got, r.readReply().kind())
	}
	if want := slices.Repeat([]string{"err:tls_reqd"}, 5); !slices.Equal(got, want) {
		t.Fatalf("replies before TLS %q, want %q", got, want)
	}
	r.send(optionBytes(optExportName, []byte("disk")))
	r.expectClosed()

	r = dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	r.send(optionBytes(optAbort, nil))
	if k := r.readReply().kind(); k != "ack" {
		t.Fatalf("abort before TLS: %s", k)
	}
	r.expectClosed()

	r = dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	r.send(optionBytes(optStartTLS, nil))
	if k := r.readReply().kind(); k != "ack" {
		t.Fatalf("starttls: %s", k)
	}
	tc := tls.Client(r.Conn, withServerName(f.client))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tr := &raw{t, tc}
	tr.send(optionBytes(optStartTLS, nil))
	if k := tr.readReply().kind(); k != "err:invalid" {
		t.Fatalf("second starttls: %s", k)
	}
	tr.send(optionBytes(optGo, infoData("disk")))
	for _, want := range []string{"info:export", "info:block", "ack"} {
		if k := tr.readReply().kind(); k != want {
			t.Fatalf("go over TLS: %s, want %s", k, want)
		}
	}
	tr.checkTransmission()
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("TLS version %s, want TLS 1.3", tls.VersionName(v))
	}
}

// TestStartTLSInjection: bytes sent behind NBD_OPT_STARTTLS, before the
// handshake, must not be taken as sent over TLS: the server hangs up.
func TestStartTLSInjection(t *testing.T) {
	f := newTLSFixture(t)
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize), TLSMode: TLSOn, TLS: f.server})
	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	r.send(append(optionBytes(optStartTLS, nil), optionBytes(optGo, infoData("disk"))...))
	if k := r.readReply().kind(); k != "ack" {
		t.Fatalf("starttls: %s", k)
	}
	r.expectClosed()
}

func TestTLSOffRefusesStartTLS(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize)})
	_, err := dialTLS(addr, &tls.Config{InsecureSkipVerify: true})
	var oe *nbdclient.OptionError
	if !errors.As(err, &oe) || oe.Reply != repErrPolicy {
		t.Fatalf("STARTTLS on a server without TLS: %v, want NBD_REP_ERR_POLICY", err)
	}
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSOff, TLSOn, TLSRequire} {
		if got, err := ParseTLSMode(m.String()); err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseTLSMode("yes"); err == nil {
		t.Error("ParseTLSMode accepted yes")
	}
}

func withServerName(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	return cfg
}

// TestTLSPSKLibnbd: with pre-shared keys (nbdkit's --tls-psk), libnbd's
// nbdinfo gets through with the right key and is refused with a wrong
// key, an unknown user or no TLS; nbdcopy fills the export with random
// bytes and reads them back intact.
func TestTLSPSKLibnbd(t *testing.T) {
	testtools.Need(t, "nbdinfo", "nbdcopy")
	key := bytes.Repeat([]byte{0x5a}, 32)
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize), TLSMode: TLSRequire,
		TLSPSK: tlspsk.Keys{"alice": key}})
	pskFile := func(user string, key []byte) string {
		f := filepath.Join(t.TempDir(), "keys.psk")
		if err := os.WriteFile(f, []byte(user+":"+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	nbdinfo := func(uri string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nbdinfo", "--size", uri).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	uri := func(user, file string) string {
		return fmt.Sprintf("nbds://%s@%s/disk?tls-psk-file=%s", user, addr, file)
	}
	good := uri("alice", pskFile("alice", key))
	out, err := nbdinfo(good)
	if err != nil || out != strconv.Itoa(testSize) {
		t.Fatalf("nbdinfo with the key: %v\n%s", err, out)
	}
	copyThrough(t, good)
	wrong := bytes.Repeat([]byte{0xa5}, 32)
	for name, u := range map[string]string{
		"wrong key":    uri("alice", pskFile("alice", wrong)),
		"unknown user": uri("bob", pskFile("bob", key)),
		"no TLS":       "nbd://" + addr + "/disk",
	} {
		if out, err := nbdinfo(u); err == nil {
			t.Errorf("%s: nbdinfo got through: %s", name, out)
		} else {
			t.Logf("%s: refused: %s", name, out)
		}
	}
}

// copyThrough copies testSize random bytes to the export at uri with
// nbdcopy, copies them back and compares.
func copyThrough(t *testing.T, uri string) {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, testSize)
	rand.Read(data)
	src, back := filepath.Join(dir, "src.img"), filepath.Join(dir, "back.img")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{src, uri}, {uri, back}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, "nbdcopy", args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("nbdcopy %v: %v\n%s", args, err, out)
		}
	}
	got, err := os.ReadFile(back)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data read back over TLS-PSK differs (%v)", err)
	}
}
