package replication

import (
	"math"
	"testing"
	"time"
)

// progressStep is an ack (or none) at a time since the resync began, and
// what status should say then: the rate in MiB/s and the ETA in seconds,
// each within 10%; a negative rate is not checked.
type progressStep struct {
	at   time.Duration
	ack  int64
	rate float64
	eta  float64
}

// acksEvery is n acks of size bytes, one every step from from on; only
// the last is checked, against rate and eta.
func acksEvery(from time.Duration, n int, every time.Duration, size int64, rate, eta float64) []progressStep {
	var steps []progressStep
	for i := 1; i <= n; i++ {
		steps = append(steps, progressStep{at: from + time.Duration(i)*every, ack: size, rate: -1})
	}
	steps[n-1].rate, steps[n-1].eta = rate, eta
	return steps
}

// TestResyncProgress drives a resync's progress through scripted acks and
// checks what status says at each point: the total never below what is
// done, the rate as measured lately, the ETA at that rate.
func TestResyncProgress(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		name  string
		total int64
		steps []progressStep
	}{
		{"the first acks", 400 * MiB, []progressStep{
			{at: 100 * time.Millisecond, ack: 4 * MiB, rate: 0, eta: 0}, // the rate is measured from here
			{at: 110 * time.Millisecond, ack: 4 * MiB, rate: 0, eta: 0}, // too soon to tell
			{at: 200 * time.Millisecond, ack: 4 * MiB, rate: 80, eta: 4.85},
			{at: 2500 * time.Millisecond, rate: 3.33, eta: 116.4}, // no ack since: the rate falls
		}},
		{"steady 40 MiB/s", 400 * MiB, acksEvery(0, 25, 100*time.Millisecond, 4*MiB, 40, 7.5)},
		{"slows from 40 to 10 MiB/s", 400 * MiB, append(acksEvery(0, 20, 100*time.Millisecond, 4*MiB, 40, 8),
			acksEvery(2*time.Second, 80, 100*time.Millisecond, MiB, 10, 24)...)},
		{"stalls", 100 * MiB, []progressStep{
			{at: 0, ack: 10 * MiB, rate: 0, eta: 0},
			{at: 500 * time.Millisecond, ack: 10 * MiB, rate: 20, eta: 4},
			{at: time.Second, ack: 10 * MiB, rate: 20, eta: 3.5},
			{at: 5 * time.Second, rate: 2.7, eta: 25.9},
		}},
		{"done past a total not raised yet", 4 * MiB, []progressStep{
			{at: 0, ack: 4 * MiB, rate: 0, eta: 0},
			{at: time.Second, ack: 4 * MiB, rate: 4, eta: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			s := resyncState{source: true, started: t0}
			s.beginPass(tc.total)
			for _, st := range tc.steps {
				now := t0.Add(st.at)
				if st.ack > 0 {
					s.add(st.ack, now)
				}
				p := s.progressAt(now)
				if p.TotalBytes < p.DoneBytes || p.TotalBytes < tc.total {
					t.Fatalf("at %v: total %d, done %d", st.at, p.TotalBytes, p.DoneBytes)
				}
				if st.rate >= 0 && (!near(p.BytesPerSec/MiB, st.rate) || !near(p.ETASeconds, st.eta)) {
					t.Fatalf("at %v: %.2f MiB/s, ETA %.2f s; want %.2f MiB/s, ETA %.2f s",
						st.at, p.BytesPerSec/MiB, p.ETASeconds, st.rate, st.eta)
				}
			}
		})
	}
}

func near(got, want float64) bool {
	return math.Abs(got-want) <= 0.1*math.Abs(want)+0.01
}
