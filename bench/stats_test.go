package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its argument")
	}
}

func TestSpread(t *testing.T) {
	lo, hi := spread([]float64{7, 2, 9, 4})
	if lo != 2 || hi != 9 {
		t.Errorf("spread = %v, %v", lo, hi)
	}
}

func run3(cell string, iops ...float64) *Cell {
	w, s, _ := strings.Cut(cell, "/")
	c := &Cell{Workload: w, System: s}
	for i, x := range iops {
		r := Run{Rep: i + 1}
		if x > 0 {
			r.Summary = &Summary{Side: "write", IOPS: x, MiBps: x / 256, P50us: 1e6 / x, CPUPerGB: 2}
		} else {
			r.Error = "server died"
		}
		c.Runs = append(c.Runs, r)
	}
	c.summarize()
	return c
}

func TestSummarizeSkipsFailedRuns(t *testing.T) {
	c := run3("w/s", 100, 0, 300, 200)
	if c.Good != 3 || c.Median.IOPS != 200 || c.IOPSMin != 100 || c.IOPSMax != 300 {
		t.Errorf("good %d median %v spread %v-%v", c.Good, c.Median.IOPS, c.IOPSMin, c.IOPSMax)
	}
	if c.Median.P50us != 1e6/200 {
		t.Errorf("p50 median = %v", c.Median.P50us)
	}
}

func TestRatios(t *testing.T) {
	cells := []*Cell{
		run3("w1/mirror", 90, 100, 80),
		run3("w1/kit", 200, 200, 190),
		run3("w2/mirror", 50),
		run3("w2/kit", 0), // all runs failed: no ratio
		run3("w1/other", 10),
	}
	got := ratios(cells, map[string][]string{"mirror": {"kit", "absent"}})
	if len(got) != 1 {
		t.Fatalf("ratios = %+v, want one", got)
	}
	r := got[0]
	if r.Workload != "w1" || r.System != "mirror" || r.Baseline != "kit" {
		t.Errorf("ratio of %s %s/%s", r.Workload, r.System, r.Baseline)
	}
	if !near(r.IOPS, 0.45) || !near(r.P50, 200.0/90) || r.CPUPerGB != 1 || r.P99 != 0 {
		t.Errorf("iops %v p50 %v cpu %v p99 %v", r.IOPS, r.P50, r.CPUPerGB, r.P99)
	}
}

func TestTableHasRatioRows(t *testing.T) {
	cells := []*Cell{run3("w1/mirror", 90), run3("w1/kit", 180), run3("w1/gone", 0)}
	r := &Results{Params: Params{Workloads: []string{"w1"}}, Cells: cells,
		Ratios: ratios(cells, map[string][]string{"mirror": {"kit"}})}
	var b strings.Builder
	writeTable(&b, r)
	out := b.String()
	for _, want := range []string{"| w1 | mirror | 90 |", "|  | kit | 180 |", "| gone | failed |",
		"| mirror / kit | 0.50x |"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "flush") {
		t.Errorf("flush column without flushes:\n%s", out)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1G": 1 << 30, "512M": 512 << 20, "1GiB": 1 << 30,
		"4096": 4096, "2t": 2 << 40, "64k": 64 << 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1M", "1.5G", "1X"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestSecondsFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"3": 3 * time.Second, "0.5": 500 * time.Millisecond,
		"1m": time.Minute} {
		var s seconds
		if err := s.Set(in); err != nil || time.Duration(s) != want {
			t.Errorf("Set(%q) = %v, %v", in, time.Duration(s), err)
		}
	}
	if fioTime(3*time.Second) != "3s" || fioTime(1500*time.Millisecond) != "1500ms" {
		t.Error("fioTime")
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (nbd kit) (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 120 3 4 20 0 17 0 1 0 0"
	ppid, ticks, err := parseStat(line)
	if err != nil || ppid != 17 || ticks != 250+120+3+4 {
		t.Errorf("parseStat = %d, %d, %v", ppid, ticks, err)
	}
	if _, _, err := parseStat("4242 (x) S 1 2"); err == nil {
		t.Error("short line accepted")
	}
}

func TestDescendants(t *testing.T) {
	parent := map[int]int{1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 12}
	got := descendants([]int{11, 20}, parent)
	slices.Sort(got)
	if want := []int{11, 12, 20, 21, 30}; !slices.Equal(got, want) {
		t.Errorf("descendants = %v, want %v", got, want)
	}
}
