package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

// timeoutCtl bounds a command a test runs to the end.
const timeoutCtl = 30 * time.Second

// httpGet returns the status code and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPprofOnlyWithTheFlag: /debug/pprof/ is not found on --metrics-listen
// unless --pprof is given; /metrics carries the Go runtime and process
// collectors either way.
func TestPprofOnlyWithTheFlag(t *testing.T) {
	for _, pprof := range []bool{false, true} {
		addr := freeAddr(t)
		args := []string{"--primary", "--metrics-listen", addr}
		if pprof {
			args = append(args, "--pprof")
		}
		n := newNode(t, "16M", args...)
		n.start()
		want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[pprof]
		if code, _ := httpGet(t, "http://"+addr+"/debug/pprof/"); code != want {
			t.Errorf("--pprof %v: /debug/pprof/ answers %d, want %d", pprof, code, want)
		}
		_, metrics := httpGet(t, "http://"+addr+"/metrics")
		for _, m := range []string{"go_goroutines ", "go_memstats_heap_inuse_bytes ", "process_resident_memory_bytes ",
			"process_open_fds ", `nbdmirror_primary{resource="r0"} 1`} {
			if !strings.Contains(metrics, "\n"+m) {
				t.Errorf("/metrics lacks %q", m)
			}
		}
		n.stop()
	}
}

// TestControlSocketIsPrivate: started under umask 000, the daemon's
// control socket is mode 0600 and another user cannot use it; with
// --control-group it is 0660 and that group's members can.
func TestControlSocketIsPrivate(t *testing.T) {
	needTools(t, "setpriv")
	if os.Getuid() != 0 {
		t.Skip("needs root, to run a command as nobody")
	}
	// A directory everyone may traverse, holding the binary nobody runs:
	// only the socket's own mode then keeps nobody out.
	dir, err := os.MkdirTemp("", "nbdmirror-control")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "nbdmirror")
	raw, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		group string
		mode  os.FileMode
		ok    bool
	}{{"", 0o600, false}, {"nogroup", 0o660, true}} {
		n := newNode(t, "16M", "--primary")
		n.control = filepath.Join(dir, "r0"+c.group+".sock")
		n.args = append(n.args, "--control", n.control)
		if c.group != "" {
			n.args = append(n.args, "--control-group", c.group)
		}
		old := syscall.Umask(0)
		n.start()
		syscall.Umask(old)
		fi, err := os.Stat(n.control)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != c.mode {
			t.Errorf("--control-group %q under umask 000: the socket is %v, want %v", c.group, fi.Mode().Perm(), c.mode)
		}
		out, err := runCmdErr(timeoutCtl, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
			bin, "role", "secondary", "--force", "--control", n.control)
		t.Logf("--control-group %q: nobody runs role secondary --force: %v: %s", c.group, err, strings.TrimSpace(out))
		switch {
		case !c.ok && (err == nil || !strings.Contains(out, "permission denied")):
			t.Errorf("nobody used a private control socket: %v: %s", err, out)
		case c.ok && err != nil:
			t.Errorf("a member of --control-group could not use the socket: %v: %s", err, out)
		}
		if role := n.status().Role; role != map[bool]string{false: "Primary", true: "Secondary"}[c.ok] {
			t.Errorf("--control-group %q: the node is %s after nobody's command", c.group, role)
		}
		n.stop()
	}
}

// TestPrivateFilesTooOpen: a secret file or a TLS key that group or others
// may read is refused at start, with a message saying so and what to do.
func TestPrivateFilesTooOpen(t *testing.T) {
	ca, err := tlstest.New("CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(pairSecret), 0o644)
	os.Chmod(secret, 0o644)
	keyDir := filepath.Join(dir, "tls")
	if err := ca.WritePeerDir(keyDir, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(keyDir, "server-key.pem"), 0o640)
	for _, c := range []struct {
		name string
		args []string
		path string
	}{
		{"secret 0644", []string{"--secret-file", secret}, secret},
		{"key 0640", []string{"--peer-tls-certificates", keyDir}, filepath.Join(keyDir, "server-key.pem")},
	} {
		n := newNode(t, "16M", append([]string{"--peer-listen", freeAddr(t), "--peer", freeAddr(t)}, c.args...)...)
		out, err := runCmdErr(timeoutCtl, binary, n.args...)
		if err == nil || !strings.Contains(out, c.path+" is accessible by group or others") || !strings.Contains(out, "chmod 600") {
			t.Errorf("%s: serve says %v: %s", c.name, err, out)
		}
		if _, err := os.Stat(n.disk); err == nil {
			t.Errorf("%s: the refused daemon created its disk", c.name)
		}
	}
}
