package main

import (
	"bytes"
	"math"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/replication"
)

// TestResyncProgressTellsTheTruth: 400 MiB written while apart, resynced at
// --resync-rate 40M (about 10 s), by the journal's tail and by the bitmap.
// From the resync's first answer on, status --json counts the whole gap in
// total_bytes, done_bytes only grows, up to it; a quarter of the way in,
// eta_seconds is within half of the time that in fact remains; and
// `status --watch` draws one bar, from 0 to 100%.
func TestResyncProgressTellsTheTruth(t *testing.T) {
	needTools(t, "fio")
	const gap = 400 << 20
	for _, c := range []struct{ name, mode string }{{"journal tail", `mode="journal tail"`}, {"bitmap", "mode=bitmap"}} {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			extra := []string{"--resync-rate", "40M", "--journal-retain", "512M"}
			if c.name == "bitmap" {
				// Journaled whole, 400 MiB of writes outgrow the 64 MiB
				// journal: its tail cannot cover the gap.
				extra = []string{"--resync-rate", "40M", "--journal-size", "64M", "--journal-retain", "4M",
					"--journal-data-max", "0"}
			}
			a, b := newPair(t, "512M", extra, nil)
			a.start()
			b.start()
			a.waitFor("connected", 10*time.Second, established)
			ctl(t, b, "disconnect")
			runFio(t, a.uri(), "--rw=write", "--bs=1M", "--iodepth=8", "--size=400M", "--refill_buffers")
			watch := startWatch(t, a)
			start := time.Now()
			ctl(t, b, "connect")
			samples := resyncSamples(t, a, 2*time.Minute)
			end := samples[len(samples)-1].at
			t.Logf("resync of %d MiB in %.1f s, %d samples", gap>>20, end.Sub(start).Seconds(), len(samples))
			checkProgress(t, samples[:len(samples)-1], gap, end)
			out := watch.stop(t)
			if n := strings.Count(out, "SyncSource: resync "); n != 1 || !strings.Contains(out, "100%") {
				t.Errorf("status --watch drew %d bars (want one, to 100%%):\n%s", n, out)
			}
			b.waitLog(c.mode, time.Second)
			stopPair(t, a, b)
		})
	}
}

// resyncSamples polls the node's status from a connect until the resync is
// over (the peer UpToDate, nothing out of sync); the last sample is that end.
func resyncSamples(t *testing.T, n *node, timeout time.Duration) []sample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var samples []sample
	for {
		st := n.status()
		samples = append(samples, sample{time.Now(), st})
		if established(st) && st.Stats.OutOfSyncBytes == 0 && len(samples) > 1 {
			return samples
		}
		if time.Now().After(deadline) {
			t.Fatalf("resync not over after %v: %+v\n%s", timeout, st.Peer, n.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkProgress holds each sample taken while the resync ran to the
// contract, and the ETA a quarter of the way in to the time that remained.
func checkProgress(t *testing.T, samples []sample, gap int64, end time.Time) {
	t.Helper()
	var prev replication.ResyncStatus
	quarter := -1
	for i, s := range samples {
		r := s.st.Peer.Resync
		if s.st.Peer.Replication != "SyncSource" || r.TotalBytes == 0 {
			continue
		}
		if r.TotalBytes < gap || r.TotalBytes > gap+8<<20 || r.DoneBytes > r.TotalBytes ||
			r.DoneBytes < prev.DoneBytes || r.TotalBytes < prev.TotalBytes {
			t.Errorf("at %.1f s: total %d done %d (before: total %d done %d), the gap is %d", s.at.Sub(samples[0].at).Seconds(),
				r.TotalBytes, r.DoneBytes, prev.TotalBytes, prev.DoneBytes, gap)
		}
		prev = r
		if quarter < 0 && r.DoneBytes >= gap/4 {
			quarter = i
		}
	}
	if quarter < 0 {
		t.Fatalf("no sample a quarter of the way in")
	}
	q := samples[quarter]
	r, remains := q.st.Peer.Resync, end.Sub(q.at).Seconds()
	t.Logf("a quarter in: total %d MiB, done %d MiB, %.1f MiB/s, ETA %.2f s; %.2f s remained",
		r.TotalBytes>>20, r.DoneBytes>>20, r.BytesPerSec/(1<<20), r.ETASeconds, remains)
	if math.Abs(r.ETASeconds-remains) > remains/2 {
		t.Errorf("ETA %.2f s a quarter of the way in, %.2f s remained", r.ETASeconds, remains)
	}
}

// watchProc is `nbdmirror status --watch` running against a node.
type watchProc struct {
	cmd  *exec.Cmd
	out  watchOutput
	done chan error
}

// watchOutput is what a watch printed; finished is closed once it drew a
// bar to 100%.
type watchOutput struct {
	mu       sync.Mutex
	b        bytes.Buffer
	finished chan struct{}
	once     sync.Once
}

func (o *watchOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	if bytes.Contains(o.b.Bytes(), []byte("100%")) {
		o.once.Do(func() { close(o.finished) })
	}
	return len(p), nil
}

func (o *watchOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func startWatch(t *testing.T, n *node) *watchProc {
	t.Helper()
	w := &watchProc{done: make(chan error, 1), out: watchOutput{finished: make(chan struct{})}}
	w.cmd = exec.Command(binary, "status", "--watch", "--interval", "100ms", "--control", n.control)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		w.done <- <-w.done
	})
	return w
}

// stop interrupts the watch, which ends on it, and returns what it printed;
// first it gives the watch, which polls every 100 ms, up to 5 s to see the
// resync's end that the caller saw and finish its bar.
func (w *watchProc) stop(t *testing.T) string {
	t.Helper()
	select {
	case <-w.out.finished:
	case <-time.After(5 * time.Second):
	}
	w.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-w.done:
		w.done <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("status --watch did not end on SIGINT:\n%s", w.out.String())
	}
	return w.out.String()
}
