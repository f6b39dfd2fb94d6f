package replication

import (
	"testing"
	"time"
)

func TestPaceLimit(t *testing.T) {
	const M = 1 << 20
	for _, tc := range []struct {
		name                   string
		rate, minRate, appRate int64
		busy                   bool
		want                   int64
	}{
		{"idle, no cap: as fast as it goes", 0, 32 * M, 0, false, 0},
		{"idle, capped", 40 * M, 32 * M, 0, false, 40 * M},
		{"busy, no cap: the minimum", 0, 32 * M, 0, true, 32 * M},
		{"busy, cap above the minimum", 100 * M, 32 * M, 0, true, 32 * M},
		{"busy, cap below the minimum: the cap", 8 * M, 32 * M, 0, true, 8 * M},
		{"busy, never yields", 0, 0, 0, true, 0},
		{"busy, never yields, capped", 40 * M, 0, 0, true, 40 * M},
		{"busy tail: the minimum plus what the application writes", 0, 32 * M, 50 * M, true, 82 * M},
		{"busy tail under a cap", 60 * M, 32 * M, 50 * M, true, 60 * M},
		{"idle tail: what it writes does not matter", 0, 32 * M, 50 * M, false, 0},
	} {
		if got := paceLimit(tc.rate, tc.minRate, tc.busy, tc.appRate); got != tc.want {
			t.Errorf("%s: paceLimit = %d MiB/s, want %d MiB/s", tc.name, got/M, tc.want/M)
		}
	}
}

// TestPace steps the pacing through sends: each step sends n bytes at a
// time since the start under a limit and expects a wait.
func TestPace(t *testing.T) {
	const M = 1 << 20
	type step struct {
		at    time.Duration
		n     int64
		limit int64
		wait  time.Duration
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no limit never waits", []step{{0, 32 * M, 0, 0}, {0, 32 * M, 0, 0}}},
		{"each MiB at 10 MiB/s", []step{
			{0, M, 10 * M, 100 * time.Millisecond},
			{100 * time.Millisecond, M, 10 * M, 100 * time.Millisecond},
			{200 * time.Millisecond, M, 10 * M, 100 * time.Millisecond},
		}},
		{"a late sender does not wait", []step{
			{0, M, 10 * M, 100 * time.Millisecond},
			{150 * time.Millisecond, M, 10 * M, 50 * time.Millisecond},
		}},
		{"time lost for over a span is not made up in a burst", []step{
			{0, M, 10 * M, 100 * time.Millisecond},
			{3 * time.Second, M, 10 * M, 100 * time.Millisecond},
		}},
		{"ahead after a span: the debt stays", []step{
			{0, 20 * M, 10 * M, 2 * time.Second},
			{1500 * time.Millisecond, M, 10 * M, 600 * time.Millisecond},
		}},
		{"the application starts: the minimum from then on", []step{
			{0, 8 * M, 0, 0},
			{10 * time.Millisecond, M, 4 * M, 250 * time.Millisecond},
			{260 * time.Millisecond, M, 4 * M, 250 * time.Millisecond},
		}},
		{"the application stops: full speed at once", []step{
			{0, M, 4 * M, 250 * time.Millisecond},
			{10 * time.Millisecond, M, 0, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			var w paceWindow
			for i, s := range tc.steps {
				var d time.Duration
				w, d = pace(w, t0.Add(s.at), s.n, s.limit)
				if diff := d - s.wait; diff > time.Millisecond || diff < -time.Millisecond {
					t.Fatalf("step %d: wait %v, want %v", i, d, s.wait)
				}
			}
		})
	}
}

// TestAppWatch: the application is busy while its counters moved within
// appQuiet; what it did before the resync began does not count.
func TestAppWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var a appWatch
	for i, s := range []struct {
		at   time.Duration
		ops  uint64
		busy bool
	}{
		{0, 500, false}, // the first look: past I/O
		{50 * time.Millisecond, 500, false},
		{100 * time.Millisecond, 501, true},
		{250 * time.Millisecond, 501, true},  // within appQuiet of the last change
		{310 * time.Millisecond, 501, false}, // quiet for appQuiet
		{400 * time.Millisecond, 509, true},
		{2 * time.Second, 509, false},
	} {
		if got := a.busy(t0.Add(s.at), s.ops, 0); got != s.busy {
			t.Fatalf("step %d at %v, ops %d: busy %v, want %v", i, s.at, s.ops, got, s.busy)
		}
	}
}
