package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

// serveFlagNames are serve's flags, as its usage lists them.
func serveFlagNames(t *testing.T) []string {
	var usage bytes.Buffer
	if _, err := parseServeFlags([]string{"--help"}, &usage); err != errHelp {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z-]+)`).FindAllStringSubmatch(usage.String(), -1) {
		names = append(names, m[1])
	}
	return names
}

// configSamples is a value for each serve flag other than its default,
// as TOML and as a command-line argument ("" for a bool flag).
func configSamples(dir string) map[string][2]string {
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("config-test-secret\n"), 0o600)
	psk := filepath.Join(dir, "keys.psk")
	os.WriteFile(psk, []byte("alice:0123456789abcdef0123456789abcdef\n"), 0o600)
	q := func(s string) [2]string { return [2]string{fmt.Sprintf("%q", s), s} }
	return map[string][2]string{
		"name": q("r1"), "disk": q(filepath.Join(dir, "d.img")), "size": q("1M"),
		"nbd-listen": q("127.0.0.1:10999"), "control": q(filepath.Join(dir, "c.sock")),
		"meta-dir": q(filepath.Join(dir, "meta")), "primary": {"true", ""}, "compress": q("zstd"),
		"journal-size": q("64M"), "journal-retain": q("8M"), "journal-data-max": q("1M"),
		"peer-listen": q("127.0.0.1:7001"),
		"peer":        q("127.0.0.1:7002"), "secret-file": q(secret), "protocol": q("B"), "peer-timeout": q("3s"),
		"metrics-listen": q("127.0.0.1:9100"), "after-split-brain": q("discard-zero-changes"), "on-io-error": q("pass-on"),
		"nbd-poll": q("50µs"), "peer-poll": q("20µs"), "resync-rate": q("10M"),
		"etcd":        {`["http://127.0.0.1:2379", "http://127.0.0.2:2379"]`, "http://127.0.0.1:2379,http://127.0.0.2:2379"},
		"etcd-prefix": q("/x"), "lease-ttl": q("3s"), "etcd-ca": q(filepath.Join(dir, "ca.pem")),
		"etcd-cert": q(filepath.Join(dir, "c.pem")), "etcd-key": q(filepath.Join(dir, "k.pem")),
		"on-lost-lease": q("io-error"),
		"tls":           q("require"), "tls-certificates": q(tlsDir(dir)), "tls-verify-peer": {"true", ""}, "tls-psk": q(psk),
		"max-inflight-bytes": q("64M"), "max-connections": q("7"), "handshake-limit": q("3s"),
		"nbd-reply-timeout":     q("9s"),
		"peer-tls-certificates": q(tlsDir(dir)), "peer-name": q("node-b"), "pprof": {"true", ""},
		"control-group": q("nogroup"), "read-balancing": q("round-robin"), "resync-min-rate": q("8M"),
	}
}

// tlsDir writes a throwaway CA's server credentials under dir.
func tlsDir(dir string) string {
	d := filepath.Join(dir, "tls")
	os.MkdirAll(d, 0o700)
	ca, err := tlstest.New("config-test")
	if err == nil {
		err = ca.WriteDir(d)
	}
	if err != nil {
		panic(err)
	}
	return d
}

// TestConfigRoundTripsEveryServeFlag: a config file setting every serve
// flag parses to the same configuration as the same values given as flags.
func TestConfigRoundTripsEveryServeFlag(t *testing.T) {
	dir := t.TempDir()
	samples := configSamples(dir)
	var toml bytes.Buffer
	var args []string
	names := serveFlagNames(t)
	sort.Strings(names)
	if len(names) < len(samples) {
		t.Fatalf("found only the flags %v in serve's usage", names)
	}
	for _, name := range names {
		// secondary excludes primary: below.
		if name == "config" || name == "help" || name == "secondary" {
			continue
		}
		s, ok := samples[name]
		if !ok {
			t.Fatalf("serve flag --%s has no sample value in configSamples: add one", name)
		}
		fmt.Fprintf(&toml, "%s = %s\n", name, s[0])
		args = append(args, "--"+name)
		if s[1] != "" {
			args = append(args, s[1])
		}
	}
	roundTrip(t, dir, toml.String(), args)
	roundTrip(t, dir, "disk = \"x.img\"\nsecondary = true\n", []string{"--disk", "x.img", "--secondary"})
}

func roundTrip(t *testing.T, dir, text string, args []string) {
	t.Helper()
	path := filepath.Join(dir, "serve.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := parseServeFlags([]string{"--config", path}, io.Discard)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", text, err)
	}
	fromFlags, err := parseServeFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("flags %v: %v", args, err)
	}
	// The TLS credentials are loaded once per parse: compare that both
	// have them, then the rest.
	if (fromFile.nbdSec.tls == nil) != (fromFlags.nbdSec.tls == nil) {
		t.Fatalf("TLS credentials loaded from one and not the other")
	}
	if (fromFile.peerTLS == nil) != (fromFlags.peerTLS == nil) {
		t.Fatalf("peer TLS credentials loaded from one and not the other")
	}
	fromFile.nbdSec.tls, fromFlags.nbdSec.tls = nil, nil
	fromFile.peerTLS, fromFlags.peerTLS = nil, nil
	if !reflect.DeepEqual(fromFile, fromFlags) {
		t.Fatalf("config file and flags differ:\nfile:  %+v\nflags: %+v", fromFile, fromFlags)
	}
}

func TestConfigCommandLineWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serve.toml")
	os.WriteFile(path, []byte("name = \"fromfile\"\ndisk = \"x.img\"\nlease-ttl = \"7s\"\n"), 0o600)
	c, err := parseServeFlags([]string{"--config", path, "--name", "fromflag"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.name != "fromflag" || c.disk != "x.img" || c.etcd.leaseTTL.String() != "7s" {
		t.Fatalf("name %q disk %q lease-ttl %v", c.name, c.disk, c.etcd.leaseTTL)
	}
}

// TestConfigBadLine: a bad line in the config file is one error naming the
// file and line, and serve exits with code 2.
func TestConfigBadLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, text, want string }{
		{"unknown key", "disk = \"x.img\"\nfrobnicate = 1\n", "line 2: frobnicate: not a serve flag"},
		{"bad duration", "disk = \"x.img\"\n\nlease-ttl = \"5 seconds\"\n", `line 3: lease-ttl: "5 seconds"`},
		{"bool for a string", "name = true\n", "line 1: name: want a string"},
		{"syntax", "disk = \"x.img\"\nname = \n", "line 2:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "serve.toml")
			os.WriteFile(path, []byte(c.text), 0o600)
			cmd := exec.Command(binary, "serve", "--config", path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if cmd.ProcessState.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2\n%s", err, stderr.String())
			}
			out := strings.TrimSpace(stderr.String())
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, path+": "+c.want) {
				t.Fatalf("want one line with %q, got:\n%s", c.want, out)
			}
		})
	}
}

func TestJournalDataMaxFlag(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "d.img")
	for _, tc := range []struct {
		arg  string
		want int64 // 0: a usage error
	}{
		{"", 256 << 10}, {"1M", 1 << 20}, {"4K", 4 << 10}, {"0", -1}, {"1K", 0}, {"256M", 0}, {"x", 0},
	} {
		args := []string{"--disk", disk, "--size", "1M"}
		if tc.arg != "" {
			args = append(args, "--journal-data-max", tc.arg)
		}
		c, err := parseServeFlags(args, io.Discard)
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("--journal-data-max %q accepted (%d)", tc.arg, c.dataMax)
		case tc.want != 0 && (err != nil || c.dataMax != tc.want):
			t.Errorf("--journal-data-max %q: %d, %v; want %d", tc.arg, c.dataMax, err, tc.want)
		}
	}
}
