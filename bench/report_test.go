package main

import (
	"strings"
	"testing"
)

// TestSummaryTable: a row per workload, a column per system, the rate with
// p50 and p99.9; MiB/s for a stream; a failed cell says so.
func TestSummaryTable(t *testing.T) {
	r := sampleResults()
	r.Cells[0].Median.P999us = 1250
	r.Cells[2].Median.MiBps, r.Cells[2].Median.P999us = 1070, 262000
	var b strings.Builder
	writeSummaryTable(&b, r)
	want := "| workload: IOPS or MiB/s (p50 / p99.9) | nbdmirror | pair-C |\n|---|---|---|\n" +
		"| randwrite-4k-qd1 | 10.7k (69 us / 1.25 ms) | 8.08k (86 us / -) |\n" +
		"| seqwrite-1m-qd8 | 1070 MiB/s (4.69 ms / 262 ms) | failed |\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestResyncTableAgainstDevice: each resync's rate is given as a share of
// the device's O_DIRECT rate, with how it resynced, and a resync that took
// another mode than its kind's is noted.
func TestResyncTableAgainstDevice(t *testing.T) {
	rs := []*ResyncResult{
		{Kind: "bitmap, random", Bytes: 1 << 30, MedianMiBs: 700, Seconds: []float64{1.46}, WireRatio: 1.001,
			Modes: []string{"bitmap", "bitmap"}},
		{Kind: "journal tail, random", Bytes: 1 << 30, MedianMiBs: 350, Seconds: []float64{2.93}, WireRatio: 1.002,
			Modes: []string{"journal tail", "bitmap"}, Errors: []string{"rep 2 resynced by bitmap, not journal tail"}},
		{Kind: "bitmap, random", System: "pair-C@abc123", Bytes: 1 << 30, MedianMiBs: 280, Seconds: []float64{3.66},
			WireRatio: 1.001, Modes: []string{"bitmap"}},
	}
	var b strings.Builder
	writeResyncTable(&b, rs, &DeviceResult{MedianMiBs: 1400})
	for _, want := range []string{
		"| bitmap, random | 1 GiB | 700 | 0.50x | [1.5] | 1.001 | bitmap |",
		"| journal tail, random | 1 GiB | 350 | 0.25x | [2.9] | 1.002 | journal tail, bitmap |",
		"- resync journal tail, random: rep 2 resynced by bitmap, not journal tail",
		"| bitmap, random (pair-C@abc123) | 1 GiB | 280 | 0.20x | [3.7] | 1.001 | bitmap |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("resync table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeResyncTable(&b, rs[:1], nil)
	if !strings.Contains(b.String(), "| 700 | - |") {
		t.Errorf("without a device figure the share is not '-':\n%s", b.String())
	}
}
