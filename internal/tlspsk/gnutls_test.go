package tlspsk

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/testtools"
)

// echoServer accepts connections, runs the handshake and echoes what it
// reads; each handshake's error goes to errs.
func echoServer(t *testing.T) (addr string, errs chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	errs = make(chan error, 16)
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(30 * time.Second))
				tc := Server(nc, &Config{Keys: testKeys})
				err := tc.Handshake()
				errs <- err
				if err == nil {
					io.Copy(tc, tc)
					tc.Close()
				}
			}()
		}
	}()
	return l.Addr().String(), errs
}

// gnutlsCli runs gnutls-cli with a PSK against addr, sends line and
// returns its output.
func gnutlsCli(t *testing.T, addr, user string, key []byte, line, priority string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"--pskusername", user, "--pskkey", hex.EncodeToString(key),
		"--priority", priority, "--insecure", "-p", port, host}
	cmd := exec.CommandContext(ctx, "gnutls-cli", args...)
	cmd.Stdin = strings.NewReader(line)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestGnuTLSClient: gnutls-cli (GnuTLS, as libnbd and qemu use it) gets
// through with the right key and is refused with a wrong one or an
// unknown name.
func TestGnuTLSClient(t *testing.T) {
	testtools.Need(t, "gnutls-cli")
	addr, errs := echoServer(t)
	const libnbd = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" // libnbd's and nbdkit's priority for PSK
	for _, tc := range []struct {
		name, user string
		key        []byte
		priority   string
		ok         bool
	}{
		{"right key", "alice", aliceKey, libnbd, true},
		{"ECDHE-PSK only", "alice", aliceKey, "NORMAL:-PSK:+ECDHE-PSK", true},
		{"P-256 by HelloRetryRequest", "bob", testKeys["bob"], "NORMAL:-GROUP-ALL:+GROUP-SECP384R1:+GROUP-SECP256R1:+ECDHE-PSK", true},
		{"wrong key", "alice", testKeys["bob"], libnbd, false},
		{"unknown user", "mallory", aliceKey, libnbd, false},
		{"PSK without ECDHE", "alice", aliceKey, "NORMAL:+PSK:-ECDHE-PSK:-DHE-PSK", false},
		{"TLS 1.2 only", "alice", aliceKey, "NORMAL:+ECDHE-PSK:-VERS-ALL:+VERS-TLS1.2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := gnutlsCli(t, addr, tc.user, tc.key, "hello over psk\n", tc.priority)
			srvErr := <-errs
			if !tc.ok {
				if err == nil || srvErr == nil {
					t.Fatalf("not refused: gnutls-cli: %v, server: %v\n%s", err, srvErr, out)
				}
				t.Logf("server: %v; gnutls-cli: %s", srvErr, lastLines(out, 2))
				if tc.name == "wrong key" && !errors.Is(srvErr, ErrWrongKey) {
					t.Errorf("server error %v does not name the wrong key", srvErr)
				}
				return
			}
			if srvErr != nil || !strings.Contains(out, "hello over psk") {
				t.Fatalf("gnutls-cli: %v, server: %v\n%s", err, srvErr, out)
			}
			t.Log(strings.Join(grepLines(out, "Description", "PSK authentication", "hello over psk"), " | "))
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// grepLines returns the lines of s that hold any of words.
func grepLines(s string, words ...string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, strings.TrimSpace(l))
				break
			}
		}
	}
	return out
}
