package main

import (
	"math"
	"slices"
)

// median returns the median of xs (the mean of the middle two for an even
// count), or NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// spread returns the smallest and largest of xs, NaN for none.
func spread(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(xs), slices.Max(xs)
}

// Run is one fio run of one cell.
type Run struct {
	Rep     int      `json:"rep"`
	Summary *Summary `json:"summary,omitempty"`
	Error   string   `json:"error,omitempty"`
	Raw     string   `json:"raw_fio_json,omitempty"` // path relative to the results file
	Seconds float64  `json:"wall_s"`
}

// Cell is one workload on one system over all reps.
type Cell struct {
	Workload string  `json:"workload"`
	System   string  `json:"system"`
	Runs     []Run   `json:"runs"`
	Median   Summary `json:"median"` // each field the median of the good runs
	IOPSMin  float64 `json:"iops_min"`
	IOPSMax  float64 `json:"iops_max"`
	Good     int     `json:"good_runs"`
}

// summarize fills Median, IOPSMin, IOPSMax and Good from Runs.
func (c *Cell) summarize() {
	var good []Summary
	for _, r := range c.Runs {
		if r.Summary != nil {
			good = append(good, *r.Summary)
		}
	}
	c.Good = len(good)
	if len(good) == 0 {
		return
	}
	field := func(f func(Summary) float64) float64 {
		xs := make([]float64, len(good))
		for i, s := range good {
			xs[i] = f(s)
		}
		return median(xs)
	}
	c.Median = Summary{
		Side:     good[0].Side,
		IOPS:     field(func(s Summary) float64 { return s.IOPS }),
		MiBps:    field(func(s Summary) float64 { return s.MiBps }),
		Bytes:    int64(field(func(s Summary) float64 { return float64(s.Bytes) })),
		P50us:    field(func(s Summary) float64 { return s.P50us }),
		P99us:    field(func(s Summary) float64 { return s.P99us }),
		P999us:   field(func(s Summary) float64 { return s.P999us }),
		MaxUs:    field(func(s Summary) float64 { return s.MaxUs }),
		Syncs:    int64(field(func(s Summary) float64 { return float64(s.Syncs) })),
		SyncP50:  field(func(s Summary) float64 { return s.SyncP50 }),
		SyncP99:  field(func(s Summary) float64 { return s.SyncP99 }),
		CPUSec:   field(func(s Summary) float64 { return s.CPUSec }),
		CPUPerGB: field(func(s Summary) float64 { return s.CPUPerGB }),
	}
	iops := make([]float64, len(good))
	for i, s := range good {
		iops[i] = s.IOPS
	}
	c.IOPSMin, c.IOPSMax = spread(iops)
}

// Ratio compares the medians of a system with those of a baseline on one
// workload: each field is system / baseline.
type Ratio struct {
	Workload string  `json:"workload"`
	System   string  `json:"system"`
	Baseline string  `json:"baseline"`
	IOPS     float64 `json:"iops"`
	MiBps    float64 `json:"mib_per_s"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	P999     float64 `json:"p99_9"`
	Max      float64 `json:"max"`
	CPUPerGB float64 `json:"cpu_s_per_gib"`
}

// ratioOf returns a / b, or 0 (shown as "-") when either is missing, so
// that the results stay valid JSON, which has no NaN.
func ratioOf(a, b float64) float64 {
	if a == 0 || b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}

// ratios computes, for every workload, each system against each of its
// baselines that ran; pairs lists system -> baselines. Cells without a good
// run are skipped.
func ratios(cells []*Cell, pairs map[string][]string) []Ratio {
	find := func(w, s string) *Cell {
		for _, c := range cells {
			if c.Workload == w && c.System == s && c.Good > 0 {
				return c
			}
		}
		return nil
	}
	var out []Ratio
	for _, c := range cells {
		if c.Good == 0 {
			continue
		}
		for _, base := range pairs[c.System] {
			b := find(c.Workload, base)
			if b == nil {
				continue
			}
			m, n := c.Median, b.Median
			out = append(out, Ratio{
				Workload: c.Workload, System: c.System, Baseline: base,
				IOPS: ratioOf(m.IOPS, n.IOPS), MiBps: ratioOf(m.MiBps, n.MiBps),
				P50: ratioOf(m.P50us, n.P50us), P99: ratioOf(m.P99us, n.P99us),
				P999: ratioOf(m.P999us, n.P999us), Max: ratioOf(m.MaxUs, n.MaxUs), CPUPerGB: ratioOf(m.CPUPerGB, n.CPUPerGB),
			})
		}
	}
	return out
}
