package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// A resync measurement: a pair (protocol C) whose Secondary is disconnected
// while the Primary writes, then reconnected; the time from connect until
// nothing is out of sync gives the resync throughput, reported against the
// device's O_DIRECT write rate (both nodes share the one device). Written
// in 128 KiB writes, journaled whole, into a journal that retains 4 MiB
// (bitmapOnly), 1 GiB written apart is beyond the tail: the bitmap drives
// the resync. Written in 1 MiB writes (in place) into a journal that
// retains 1.25 GiB, the journal's tail does. Both nodes keep every other
// default (--journal-data-max among them). With --against, pair-C@REV
// resyncs each kind in turn with pair-C.
type resyncKind struct {
	name  string
	bytes int64    // written while apart
	bs    string   // in writes of this size
	fio   []string // how the data looks
	serve []string // flags of both nodes
	mode  string   // the mode the resync should take: "journal tail" or "bitmap"
}

var resyncKinds = []resyncKind{
	{"bitmap, compressible", 1 << 30, "128k",
		[]string{"--buffer_compress_percentage=50", "--refill_buffers", "--buffer_compress_chunk=4k"}, bitmapOnly, "bitmap"},
	{"bitmap, random", 1 << 30, "128k", []string{"--refill_buffers"}, bitmapOnly, "bitmap"},
	{"journal tail, random", 1 << 30, "1M", []string{"--refill_buffers"},
		[]string{"--journal-size", "3G", "--journal-retain", "1280M"}, "journal tail"},
}

// bitmapOnly is a journal of 256 MiB that retains 4 MiB: its checkpoints,
// forced at three quarters full, pass the writes made apart (below
// --journal-data-max, so journaled whole), and the tail cannot carry even
// a compressible gigabyte, stored in about half that.
var bitmapOnly = []string{"--journal-size", "256M", "--journal-retain", "4M"}

// ResyncResult is one kind's measurements.
type ResyncResult struct {
	Kind string `json:"kind"`
	// System is the pair measured when not pair-C: pair-C@REV (--against).
	System     string    `json:"system,omitempty"`
	Bytes      int64     `json:"bytes_written_apart"`
	Seconds    []float64 `json:"seconds"`
	WireBytes  []int64   `json:"resync_wire_bytes"`
	MedianMiBs float64   `json:"median_mib_per_s"`
	WireRatio  float64   `json:"wire_over_raw"`
	// Modes is how each run resynced, as the SyncSource's status said
	// (peer.resync.mode): "journal tail" if it was seen replaying the
	// tail, else "bitmap".
	Modes  []string `json:"modes,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

// resyncs measures every kind reps times on the pair-C images, and on
// pair-C@REV's (--against) in turn with them, rep by rep.
func (b *bench) resyncs(ctx context.Context) []*ResyncResult {
	var pairs []system
	for _, s := range b.cfg.systems {
		if s.name == "pair-C" || strings.HasPrefix(s.name, "pair-C@") {
			pairs = append(pairs, s)
		}
	}
	var out []*ResyncResult
	for _, k := range resyncKinds {
		k.bytes = min(k.bytes, b.cfg.size)
		res := make([]*ResyncResult, len(pairs))
		for i, s := range pairs {
			res[i] = &ResyncResult{Kind: k.name, Bytes: k.bytes}
			if s.rev != "" {
				res[i].System = s.name
			}
		}
		for rep := 1; rep <= b.cfg.reps && ctx.Err() == nil; rep++ {
			for i, s := range pairs {
				b.resyncRep(ctx, s, k, rep, res[i])
			}
		}
		for _, r := range res {
			if len(r.Seconds) > 0 {
				r.MedianMiBs = float64(k.bytes) / median(r.Seconds) / (1 << 20)
				r.WireRatio = float64(r.WireBytes[len(r.WireBytes)/2]) / float64(k.bytes)
			}
			out = append(out, r)
		}
	}
	return out
}

// resyncRep measures rep number rep of k on s into res.
func (b *bench) resyncRep(ctx context.Context, s system, k resyncKind, rep int, res *ResyncResult) {
	secs, wire, mode, err := b.resyncOnce(ctx, s, k)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		logf("resync %s rep %d: %v", res.label(), rep, err)
		return
	}
	res.Seconds, res.WireBytes = append(res.Seconds, secs), append(res.WireBytes, wire)
	res.Modes = append(res.Modes, mode)
	if mode != k.mode {
		res.Errors = append(res.Errors, fmt.Sprintf("rep %d resynced by %s, not %s", rep, mode, k.mode))
	}
	logf("resync %s rep %d: %.1f MiB/s by %s, %d bytes on the wire", res.label(), rep, float64(k.bytes)/secs/(1<<20), mode, wire)
}

// label names the result: its kind, and the system when not pair-C.
func (r *ResyncResult) label() string {
	if r.System == "" {
		return r.Kind
	}
	return r.Kind + " (" + r.System + ")"
}

// resyncOnce measures one resync of k: its seconds, its bytes on the wire
// and its mode.
func (b *bench) resyncOnce(ctx context.Context, s system, k resyncKind) (float64, int64, string, error) {
	dropCaches()
	l := &launch{ctx: ctx, dir: b.sysDir(s), images: b.images(s), bin: b.bin, extra: k.serve}
	if s.rev != "" {
		l.bin = b.revBin
	}
	defer l.stop()
	uri, err := s.start(l)
	if err != nil {
		return 0, 0, "", err
	}
	syscall.Sync() // as in a turn: the initial full sync is not written back during the measurement
	primary, secondary := newControl(filepath.Join(l.dir, "nbdmirror-0.sock")), newControl(filepath.Join(l.dir, "nbdmirror-1.sock"))
	defer primary.close()
	defer secondary.close()
	if err := secondary.do("POST", "/disconnect", nil); err != nil {
		return 0, 0, "", err
	}
	args := append([]string{"--name=apart", "--ioengine=nbd", "--uri=" + uri, "--rw=write", "--bs=" + k.bs,
		"--iodepth=8", fmt.Sprintf("--size=%d", k.bytes), "--output=" + filepath.Join(l.dir, "apart.json")}, k.fio...)
	if out, err := exec.CommandContext(ctx, "fio", args...).CombinedOutput(); err != nil {
		return 0, 0, "", fmt.Errorf("fio: %v: %s", err, lastLines(string(out), 5))
	}
	var before pairStatus
	err = primary.do("GET", "/status", &before)
	if err != nil {
		return 0, 0, "", err
	}
	start := time.Now()
	if err := secondary.do("POST", "/connect", nil); err != nil {
		return 0, 0, "", err
	}
	mode := "bitmap"
	for {
		var st pairStatus
		if err := primary.do("GET", "/status", &st); err != nil {
			return 0, 0, "", err
		}
		// A build before peer.resync.mode: its tail kept the peer Consistent.
		tail := st.Peer.Resync.Mode == "journal tail" || st.Peer.Resync.Mode == "" && st.Peer.Disk == "Consistent"
		if st.Peer.Replication == "SyncSource" && tail {
			mode = "journal tail" // a tail that did not cover the gap goes on by bitmap
		}
		if st.Peer.Connection == "Connected" && st.Peer.Replication == "Established" && st.Stats.OutOfSync == 0 {
			return time.Since(start).Seconds(), st.Stats.ResyncWire - before.Stats.ResyncWire, mode, nil
		}
		if time.Since(start) > 10*time.Minute || ctx.Err() != nil {
			return 0, 0, "", fmt.Errorf("resync not done after %v", time.Since(start).Round(time.Second))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pairStatus is the part of `status --json` the resync measurement reads.
type pairStatus struct {
	Peer struct {
		Connection  string `json:"connection"`
		Replication string `json:"replication"`
		Disk        string `json:"disk"`
		Resync      struct {
			Mode string `json:"mode"`
		} `json:"resync"`
	} `json:"peer"`
	Stats struct {
		OutOfSync  int64 `json:"out_of_sync_bytes"`
		ResyncWire int64 `json:"resync_bytes_wire"`
	} `json:"stats"`
}

// writeResyncTable prints the resync results as markdown, each against
// the device's O_DIRECT write rate when it was measured.
func writeResyncTable(w io.Writer, rs []*ResyncResult, dev *DeviceResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n| resync (pair, protocol C) | written apart | MiB/s (median) | of the device | runs (s) | wire / raw | by |\n"+
		"|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		ofDevice := "-"
		if dev != nil && dev.MedianMiBs > 0 && r.MedianMiBs > 0 {
			ofDevice = fmtRatio(r.MedianMiBs / dev.MedianMiBs)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %v | %.3f | %s |\n", r.label(), fmtSize(r.Bytes), r.MedianMiBs, ofDevice,
			roundAll(r.Seconds), r.WireRatio, strings.Join(slices.Compact(slices.Clone(r.Modes)), ", "))
	}
	for _, r := range rs {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "\n- resync %s: %s\n", r.label(), e)
		}
	}
}

func roundAll(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*10+0.5)) / 10
	}
	return out
}
