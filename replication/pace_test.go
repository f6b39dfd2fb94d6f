package replication

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
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

// lagFor keeps in flight what the peer takes in resyncPlanAhead, within
// the minimum and the given most.
func TestLagFor(t *testing.T) {
	most := uint64(32 << 20)
	for _, c := range []struct {
		name string
		rate float64
		want uint64
	}{
		{"not measured yet: the minimum", 0, tune.resyncWindowMin},
		{"a slow peer: the minimum", 4 << 20, tune.resyncWindowMin},
		{"what the peer takes in the plan-ahead time", 64 << 20, uint64(64<<20) / uint64(time.Second/tune.resyncPlanAhead)},
		{"a fast peer: the most", 1 << 30, most},
	} {
		if got := lagFor(c.rate, most); got != c.want {
			t.Errorf("%s: lagFor(%.0f) = %d, want %d", c.name, c.rate, got, c.want)
		}
	}
}

// throttledDisk is a memory disk that takes writes at rate bytes per second, as
// a slow device does, and closes reached once it has taken mark bytes
// since counting began.
type throttledDisk struct {
	memDisk
	rate     float64
	counting atomic.Bool
	taken    atomic.Int64
	mark     int64
	reached  chan struct{}
	once     sync.Once
}

func (d *throttledDisk) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(float64(len(p)) / d.rate * float64(time.Second))) // the device's own time
	n, err := d.memDisk.WriteAt(p, off)
	if d.counting.Load() && d.taken.Add(int64(n)) >= d.mark {
		d.once.Do(func() { close(d.reached) })
	}
	return n, err
}

// TestLoneWriteBehindAResyncToASlowPeer: a resync keeps in flight only what
// the peer takes in tune.resyncPlanAhead (lagFor), so a client write that
// queues behind it on the link completes within --peer-timeout however
// slow the peer's disk. With a fixed 32 MiB window, the 24 MiB written
// apart were all in flight to a disk taking 8 MiB/s, and the write waited
// about 3 s, past the 2 s timeout.
func TestLoneWriteBehindAResyncToASlowPeer(t *testing.T) {
	const size = 32 << 20
	slow := &throttledDisk{memDisk: memDisk{journal.NewMemDisk(size)}, rate: 8 << 20, mark: 2 << 20, reached: make(chan struct{})}
	p := openPairWith(t, size, func(pc, sc *Config) {
		sc.Disk = slow
		pc.PeerTimeout, sc.PeerTimeout = 2*time.Second, 2*time.Second
		// The real file system: a memory one holds one lock while it
		// prepares the journal's spare segments, a second or more.
		pc.FS, sc.FS = nil, nil
	}, nil)
	p.sdisk = slow.memDisk
	p.waitInSync(t)
	p.primary.Disconnect()
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	for off := int64(0); off < 24<<20; off += 1 << 20 {
		if _, err := p.primary.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	slow.counting.Store(true)
	p.primary.Connect()
	select {
	case <-slow.reached: // the resync is under way
	case <-time.After(20 * time.Second):
		t.Fatal("the resync did not start")
	}
	start := time.Now()
	if _, err := p.primary.WriteAt(make([]byte, 4096), 30<<20); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a lone write behind the resync took %v, past the 2 s peer timeout", d.Round(time.Millisecond))
	} else {
		t.Logf("a lone write behind the resync took %v", d.Round(10*time.Microsecond))
	}
	p.waitInSync(t)
	p.sameImages(t)
}
