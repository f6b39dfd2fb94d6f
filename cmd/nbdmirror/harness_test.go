package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/testtools"
)

// binary is the nbdmirror executable built once for the tests that run
// daemons as real processes.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nbdmirror-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "nbdmirror")
	// -buildvcs=auto: the git revision goes into the build info when the
	// tree is a checkout (TestVersion), whatever GOFLAGS says.
	args := []string{"build", "-buildvcs=auto", "-o", binary}
	if os.Getenv("NBDMIRROR_TEST_RACE") != "" { // daemons built with the race detector
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build nbdmirror: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address for a daemon to listen on, with a
// port that was free a moment ago. The port comes from below the kernel's
// ephemeral range, so no outgoing connection and no listener on port 0
// (these tests make many of both) can take it before the daemon binds it,
// and none is handed out twice in one test run.
func freeAddr(t testing.TB) string {
	t.Helper()
	lo, hi := reservablePorts()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range hi - lo {
		port := lo + nextPort%(hi-lo)
		nextPort++
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return l.Addr().String()
	}
	t.Fatalf("no free port in %d-%d", lo, hi)
	return ""
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
	nextPort   = os.Getpid() * 7 // another run of the tests starts elsewhere
)

// reservablePorts is the range [lo, hi) freeAddr takes ports from: up to
// the start of the kernel's ephemeral range.
func reservablePorts() (lo, hi int) {
	lo, hi = 20000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > 2048 {
		hi = first
		lo = min(lo, first/2)
	}
	return lo, hi
}

// node is one nbdmirror serve process under test.
type node struct {
	t          testing.TB
	dir        string
	disk       string
	nbd        string
	control    string
	peerListen string
	args       []string
	cmd        *exec.Cmd
	logMu      sync.Mutex
	log        bytes.Buffer
	exited     chan struct{}
}

// newNode prepares (but does not start) a daemon with its own folder.
func newNode(t testing.TB, size string, extra ...string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, dir: dir, disk: filepath.Join(dir, "disk.img"),
		nbd: freeAddr(t), control: filepath.Join(dir, "r0.sock")}
	n.args = append([]string{"serve", "--name", "r0", "--disk", n.disk, "--nbd-listen", n.nbd,
		"--control", n.control}, extra...)
	if size != "" {
		n.args = append(n.args, "--size", size)
	}
	return n
}

// start runs the daemon and waits until its control socket exists.
func (n *node) start() {
	n.t.Helper()
	n.startPolling(10 * time.Millisecond)
}

// startPolling is start, looking for the control socket every interval.
func (n *node) startPolling(every time.Duration) {
	n.t.Helper()
	n.cmd = exec.Command(binary, n.args...)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go n.collect(stderr)
	n.t.Cleanup(n.kill)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", n.control); err == nil { // a stale socket of a killed daemon refuses
			c.Close()
			return
		}
		select {
		case <-n.exited:
			n.t.Fatalf("daemon exited before it was ready: %v\n%s", n.cmd.ProcessState, n.logs())
		case <-time.After(every):
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("daemon not ready after 20s\n%s", n.logs())
		}
	}
}

func (n *node) collect(r interface{ Read([]byte) (int, error) }) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		n.logMu.Lock()
		n.log.WriteString(s.Text() + "\n")
		n.logMu.Unlock()
	}
	n.cmd.Wait()
	close(n.exited)
}

func (n *node) logs() string {
	n.logMu.Lock()
	defer n.logMu.Unlock()
	return n.log.String()
}

// uri is the NBD URI of the node's export.
func (n *node) uri() string { return "nbd://" + n.nbd + "/r0" }

// stop sends SIGTERM and returns the exit code.
func (n *node) stop() int {
	n.t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(60 * time.Second):
		n.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, into the log
		time.Sleep(time.Second)
		n.kill()
		n.t.Fatalf("daemon did not stop within 60s after SIGTERM\n%s", n.logs())
	}
	return n.cmd.ProcessState.ExitCode()
}

// kill SIGKILLs the daemon's process group (a crash) and waits for it.
func (n *node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.exited
}

// status asks the daemon's control socket for `status --json`.
func (n *node) status() Status {
	n.t.Helper()
	out, err := exec.Command(binary, "status", "--json", "--control", n.control).Output()
	if err != nil {
		n.t.Fatalf("status: %v", err)
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil {
		n.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// needTools skips the test when a command it drives is not installed, or
// fails it under CI and make test (see testtools.Need).
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	testtools.Need(t, tools...)
}

// runCmd runs a command with a timeout and fails the test on error.
func runCmd(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("%s %s: still running after %v\n%s", name, strings.Join(args, " "), timeout, out.String())
	}
	return out.String()
}

// runCmdErr runs a command with a timeout and returns its output and error.
func runCmdErr(timeout time.Duration, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), fmt.Errorf("%s: still running after %v", name, timeout)
	}
}
