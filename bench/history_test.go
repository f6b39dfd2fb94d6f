package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResults() *Results {
	r := &Results{
		Date: time.Date(2026, 11, 27, 8, 2, 9, 0, time.UTC),
		Machine: Machine{CPUs: 2, MemoryBytes: 24 << 30, Kernel: "6.18.44", Commit: "c6aade41b3a8 (work tree has changes)",
			LoadStart: "1.40 1.72 2.06", LoadEnd: "3.12 3.09 2.76"},
		Params: Params{Workloads: []string{"randwrite-4k-qd1", "seqwrite-1m-qd8"}, Reps: 3, Runtime: "6s",
			Systems: []string{"nbdmirror", "pair-C"}},
		Resyncs: []*ResyncResult{{Kind: "bitmap, random", MedianMiBs: 419.4}},
		Device:  &DeviceResult{MedianMiBs: 1394.2},
		Note:    "side by side\n with X",
	}
	r.Cells = []*Cell{
		{Workload: "randwrite-4k-qd1", System: "nbdmirror", Good: 3, Median: Summary{IOPS: 10712, P50us: 69.1, P99us: 140}},
		{Workload: "randwrite-4k-qd1", System: "pair-C", Good: 3, Median: Summary{IOPS: 8080, P50us: 86, P99us: 358}},
		{Workload: "seqwrite-1m-qd8", System: "nbdmirror", Good: 3, Median: Summary{IOPS: 1070, P50us: 4690, P99us: 128000}},
		{Workload: "seqwrite-1m-qd8", System: "pair-C", Good: 0},
	}
	return r
}

func TestHistoryLine(t *testing.T) {
	got := historyLine(sampleResults(), "raw/20261127-080209.json")
	want := "- 2026-11-27 08:02 | c6aade41b3a8+dirty | 2 CPUs 24.0 GiB Linux 6.18.44 load 1.40 -> 3.12 | 3 x 6s | " +
		"raw/20261127-080209.json | randwrite-4k-qd1: nbdmirror 10.7k 69us, pair-C 8.08k 86us; " +
		"seqwrite-1m-qd8: nbdmirror 1.07k 4.69ms, pair-C failed; resync MiB/s: bitmap random 419; " +
		"device 1394 MiB/s | side by side with X\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestSave checks where a run's results go: the full results under raw/,
// latest.md and latest.png only for the reference run, and a history line
// naming the raw results, under a header written once.
func TestSave(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, rawDirName), 0o755); err != nil {
		t.Fatal(err)
	}
	r := sampleResults()
	if _, err := save(dir, "20261127-080209", r, true); err != nil {
		t.Fatal(err)
	}
	if _, err := save(dir, "20261127-090000", r, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"latest.md", "latest.png", "raw/20261127-080209.json", "raw/20261127-080209.png",
		"raw/20261127-090000.json", "raw/20261127-090000.md", "raw/20261127-090000.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "raw/20261127-080209.md")); err == nil {
		t.Error("the reference run's markdown went to raw/ too")
	}
	md, _ := os.ReadFile(filepath.Join(dir, "latest.md"))
	if !strings.Contains(string(md), "](latest.png)") {
		t.Errorf("latest.md does not show latest.png:\n%s", md)
	}
	h, _ := os.ReadFile(filepath.Join(dir, historyFile))
	lines := strings.Split(strings.TrimSuffix(string(h), "\n"), "\n")
	if !strings.HasPrefix(string(h), historyHeader) || strings.Count(string(h), "# nbdmirror benchmark history") != 1 {
		t.Errorf("history header:\n%s", h)
	}
	if n := len(lines); n < 2 || !strings.Contains(lines[n-2], "| raw/20261127-080209.json |") ||
		!strings.Contains(lines[n-1], "| raw/20261127-090000.json |") {
		t.Errorf("history lines:\n%s", h)
	}
	if err := addHistory(dir, filepath.Join(dir, "raw/20261127-090000.json"), "abc:old.json", ""); err != nil {
		t.Fatal(err)
	}
	h2, _ := os.ReadFile(filepath.Join(dir, historyFile))
	added := strings.TrimPrefix(string(h2), string(h))
	if want := strings.Replace(lines[len(lines)-1], "raw/20261127-090000.json", "abc:old.json", 1) + "\n"; added != want {
		t.Errorf("--add-history added\n%s\nwant\n%s", added, want)
	}
}

func TestReplacesLatest(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--warm", "--note", "x"}, true},
		{[]string{"--against", "abc123"}, false},
		{[]string{"--systems", "nbdkit"}, false},
		{[]string{"--workloads", "randwrite-4k-qd1"}, false},
	} {
		cfg, err := parseFlags(c.args, root, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.replacesLatest(); got != c.want {
			t.Errorf("%v: replacesLatest %v", c.args, got)
		}
	}
}
