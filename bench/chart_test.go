package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestChartIsAPNG(t *testing.T) {
	r := &Results{Params: Params{Workloads: []string{"w1", "w2"}, Systems: []string{"a", "b"}}}
	for _, w := range r.Params.Workloads {
		r.Cells = append(r.Cells,
			&Cell{Workload: w, System: "a", Good: 1, Median: Summary{IOPS: 12000, P99us: 250}},
			&Cell{Workload: w, System: "b", Good: 0}) // a system with no result
	}
	path := filepath.Join(t.TempDir(), "chart.png")
	if err := writeChart(r, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("not a PNG: %v", err)
	}
}
