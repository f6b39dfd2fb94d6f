package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sample is one `status --json` answer and when it came.
type sample struct {
	at time.Time
	st Status
}

// statusWatch asks a daemon for its status every few milliseconds, in the
// background, and keeps every answer. It holds the daemon to its word: a
// peer disk reported UpToDate while regions are out of sync is a lie.
type statusWatch struct {
	c    *controlClient
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards the fields below, written by the watching goroutine
	samples []sample
	lies    []Status
	errs    int
}

func watchNode(n *node) *statusWatch {
	c := newControlClient(n.control)
	c.http.Timeout = 5 * time.Second
	w := &statusWatch{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	n.t.Cleanup(w.close)
	return w
}

func (w *statusWatch) run() {
	defer close(w.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var st Status
		err := w.c.get("/status", &st)
		w.mu.Lock()
		if err != nil {
			w.errs++
		} else {
			w.samples = append(w.samples, sample{time.Now(), st})
			// A SyncTarget's own marks are regions it lacks: its source is
			// UpToDate.
			if st.Peer.Disk == "UpToDate" && st.Stats.OutOfSyncBytes > 0 && st.Peer.Replication != "SyncTarget" {
				w.lies = append(w.lies, st)
			}
		}
		w.mu.Unlock()
		select {
		case <-tick.C:
		case <-w.stop:
			return
		}
	}
}

// close stops the watch; it may be called more than once.
func (w *statusWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// check fails the test if the daemon ever reported its peer UpToDate with
// regions out of sync (other than as SyncTarget), and returns how many
// samples it took.
func (w *statusWatch) check(t testing.TB) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lies) > 0 {
		st := w.lies[0]
		t.Errorf("%d of %d status answers said the peer disk is UpToDate with out_of_sync_bytes > 0; first: "+
			"connection %s replication %s peer disk %s out_of_sync_bytes %d", len(w.lies), len(w.samples),
			st.Peer.Connection, st.Peer.Replication, st.Peer.Disk, st.Stats.OutOfSyncBytes)
	}
	return len(w.samples)
}

// since returns the samples taken after t0.
func (w *statusWatch) since(t0 time.Time) []sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := sort.Search(len(w.samples), func(i int) bool { return w.samples[i].at.After(t0) })
	return append([]sample(nil), w.samples[i:]...)
}

// peerConns lists the established TCP connections from or to the given
// ports, each as "local>peer".
func peerConns(t testing.TB, kill bool, ports ...string) map[string]bool {
	t.Helper()
	args := []string{"-Htn"}
	if kill {
		args = append(args, "-K")
	}
	args = append(args, "state", "established", portFilter(ports))
	out, err := runCmdErr(10*time.Second, "ss", args...)
	if err != nil {
		t.Fatalf("ss %v: %v\n%s", args, err, out)
	}
	conns := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 {
			conns[f[2]+">"+f[3]] = true
		}
	}
	return conns
}

func portFilter(ports []string) string {
	var terms []string
	for _, p := range ports {
		terms = append(terms, "sport = :"+p, "dport = :"+p)
	}
	return "( " + strings.Join(terms, " or ") + " )"
}

// needSSKill skips the test when `ss -K` cannot reset a connection here
// (it needs root and a kernel with CONFIG_INET_DIAG_DESTROY).
func needSSKill(t testing.TB) {
	t.Helper()
	needTools(t, "ss")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peerConns(t, true, port(ln.Addr().String()))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Skip("ss -K does not reset connections on this machine")
	}
}

// port is the port of a host:port address.
func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// fioJob is fio running in the background against an export until stopped.
type fioJob struct {
	cmd  *exec.Cmd
	out  string
	logs bytes.Buffer
	done chan error
}

func startFio(t testing.TB, uri string, args ...string) *fioJob {
	t.Helper()
	j := &fioJob{out: filepath.Join(t.TempDir(), "fio.json"), done: make(chan error, 1)}
	// --thread: a forked job would run in a session of its own and outlive
	// the SIGKILL of fio's process group.
	base := []string{"--name=load", "--ioengine=nbd", "--uri=" + uri, "--thread", "--output-format=json",
		"--output=" + j.out}
	j.cmd = exec.Command("fio", append(base, args...)...)
	j.cmd.Stdout, j.cmd.Stderr = &j.logs, &j.logs
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	j.cmd.WaitDelay = 5 * time.Second
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { j.done <- j.cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-j.cmd.Process.Pid, syscall.SIGKILL)
		<-j.done
		j.done <- nil
	})
	return j
}

// fioResult is what fio's JSON says of its one job's writes.
type fioResult struct {
	Error   int
	Writes  int64
	MaxClat time.Duration
}

// stop interrupts fio (it ends its job and writes its report) and reads the
// report. fio still running after timeout (an I/O that never completes)
// fails the test.
func (j *fioJob) stop(t testing.TB, timeout time.Duration) fioResult {
	t.Helper()
	j.cmd.Process.Signal(syscall.SIGINT)
	return j.wait(t, timeout)
}

// wait waits for fio to end by itself and reads its report.
func (j *fioJob) wait(t testing.TB, timeout time.Duration) fioResult {
	t.Helper()
	select {
	case err := <-j.done:
		j.done <- err
	case <-time.After(timeout):
		t.Fatalf("fio did not end within %v: a write never completed\n%s", timeout, j.logs.String())
	}
	raw, err := os.ReadFile(j.out)
	if i := bytes.IndexByte(raw, '{'); i >= 0 { // after "fio: terminating on signal 2"
		raw = raw[i:]
	}
	var rep struct {
		Jobs []struct {
			Error int `json:"error"`
			Write struct {
				TotalIOs int64 `json:"total_ios"`
				Clat     struct {
					Max int64 `json:"max"`
				} `json:"clat_ns"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &rep)
	}
	if err != nil || len(rep.Jobs) != 1 {
		t.Fatalf("fio report: %v\n%s\n%s", err, raw, j.logs.String())
	}
	w := rep.Jobs[0]
	return fioResult{Error: w.Error, Writes: w.Write.TotalIOs, MaxClat: time.Duration(w.Write.Clat.Max)}
}

func (r fioResult) String() string {
	return fmt.Sprintf("%d writes, error %d, max completion latency %v", r.Writes, r.Error, r.MaxClat)
}

// TestDrawBar: one resync draws one bar, from when its gap is known until
// it is over, also while its last bytes are acknowledged before the end.
func TestDrawBar(t *testing.T) {
	st := func(repl string, total, done int64) Status {
		var s Status
		s.Peer.Replication, s.Peer.Resync.TotalBytes, s.Peer.Resync.DoneBytes = repl, total, done
		return s
	}
	for _, tc := range []struct {
		st            Status
		drawing, want bool
	}{
		{st("SyncSource", 0, 0), false, false}, // the gap not known yet
		{st("SyncSource", 100, 0), false, true},
		{st("SyncSource", 100, 50), true, true},
		{st("SyncSource", 100, 100), true, true},   // all acknowledged, SyncDone not yet answered
		{st("SyncSource", 100, 100), false, false}, // a pass with nothing left: no new bar
		{st("SyncTarget", 100, 10), false, true},
		{st("Established", 100, 100), true, false}, // over: the bar finishes
		{st("Established", 0, 0), false, false},
	} {
		if got := drawBar(tc.st, tc.drawing); got != tc.want {
			t.Errorf("drawBar(%s total %d done %d, drawing %v) = %v", tc.st.Peer.Replication,
				tc.st.Peer.Resync.TotalBytes, tc.st.Peer.Resync.DoneBytes, tc.drawing, got)
		}
	}
}
