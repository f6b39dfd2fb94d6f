package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeNotifiesReady: under Type=notify the daemon sends READY=1 to
// $NOTIFY_SOCKET, and only once its control socket answers.
func TestServeNotifiesReady(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n := newNode(t, "8M", "--primary")
	cmd := exec.Command(binary, n.args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	ln.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 256)
	k, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != "READY=1" {
		t.Fatalf("notified %q", got)
	}
	c, err := net.Dial("unix", n.control)
	if err != nil {
		t.Fatalf("READY=1 before the control socket answers: %v", err)
	}
	c.Close()
}

// TestUnitFileVerifies runs systemd-analyze verify on the unit template,
// instantiated, with ExecStart pointing at the built binary.
func TestUnitFileVerifies(t *testing.T) {
	needTools(t, "systemd-analyze")
	unit, err := os.ReadFile("../../dist/nbdmirror@.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(unit), "/usr/local/bin/nbdmirror", binary, 1)
	path := filepath.Join(t.TempDir(), "nbdmirror@r0.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "nbdmirror@") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
