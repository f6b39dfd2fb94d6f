package coordinator

import (
	"testing"
	"time"
)

func TestMargin(t *testing.T) {
	for _, tc := range []struct{ ttl, want time.Duration }{
		{5 * time.Second, 1250 * time.Millisecond},
		{2 * time.Second, 500 * time.Millisecond},
		{time.Second, 300 * time.Millisecond},
		{400 * time.Millisecond, 200 * time.Millisecond}, // never more than half
		{60 * time.Second, 15 * time.Second},
	} {
		if got := Margin(tc.ttl); got != tc.want {
			t.Errorf("Margin(%v) = %v, want %v", tc.ttl, got, tc.want)
		}
	}
}

// The deadline counts from the keep-alive's sending, never from its
// answer: a slow answer shortens the lease this node uses.
func TestDeadlineCountsFromSending(t *testing.T) {
	sent := time.Now()
	recv := sent.Add(900 * time.Millisecond) // a slow round trip
	ttl := 5 * time.Second
	m := Margin(ttl)
	d := Deadline(sent, ttl, m)
	if want := sent.Add(3750 * time.Millisecond); !d.Equal(want) {
		t.Fatalf("Deadline = %v after sending, want 3.75s", d.Sub(sent))
	}
	// etcd received the keep-alive somewhere in [sent, recv]: its expiry
	// is at least sent+ttl, later than the deadline by the margin.
	if earliestExpiry := sent.Add(ttl); !d.Before(earliestExpiry) || earliestExpiry.Sub(d) != m {
		t.Fatalf("deadline %v not a margin before the earliest expiry", earliestExpiry.Sub(d))
	}
	if g := GoneAfter(recv, ttl, m); !g.After(recv.Add(ttl)) {
		t.Fatalf("GoneAfter %v is not past the latest expiry", g.Sub(recv))
	}
}

func TestVerdict(t *testing.T) {
	t0 := time.Now()
	dl, gone := t0.Add(3*time.Second), t0.Add(6*time.Second)
	for _, tc := range []struct {
		name string
		now  time.Time
		l    Lease
		want LeaseVerdict
	}{
		{"not holder", t0.Add(time.Hour), Lease{Deadline: dl, Gone: gone}, Serve},
		{"valid", t0, Lease{Holder: true, Deadline: dl, Gone: gone}, Serve},
		{"just before the deadline", dl.Add(-time.Nanosecond), Lease{Holder: true, Deadline: dl, Gone: gone}, Serve},
		{"at the deadline", dl, Lease{Holder: true, Deadline: dl, Gone: gone}, Hold},
		{"between deadline and gone", dl.Add(time.Second), Lease{Holder: true, Deadline: dl, Gone: gone}, Hold},
		{"gone", gone, Lease{Holder: true, Deadline: dl, Gone: gone}, Resign},
		{"lost", t0, Lease{Holder: true, Deadline: dl, Gone: gone, Lost: true}, Resign},
		{"never renewed", t0, Lease{Holder: true}, Hold},
	} {
		if got := Verdict(tc.now, tc.l); got != tc.want {
			t.Errorf("%s: Verdict = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDecide(t *testing.T) {
	on := GateInput{Enabled: true, Holder: true, Primary: true, Mirroring: true, OnLost: Suspend}
	with := func(f func(*GateInput)) GateInput { in := on; f(&in); return in }
	for _, tc := range []struct {
		name string
		in   GateInput
		want GateAction
	}{
		{"off", GateInput{}, Pass},
		{"holder, mirrored", on, Pass},
		{"not holder", with(func(in *GateInput) { in.Holder = false }), Fail},
		{"holder, not yet promoted", with(func(in *GateInput) { in.Primary = false }), Wait},
		{"lease holds, suspend", with(func(in *GateInput) { in.Verdict = Hold }), Wait},
		{"lease holds, io-error", with(func(in *GateInput) { in.Verdict, in.OnLost = Hold, IOError }), Fail},
		{"lease gone, suspend", with(func(in *GateInput) { in.Verdict = Resign }), Wait},
		{"no link, peer not fenced", with(func(in *GateInput) { in.Mirroring = false }), Wait},
		{"no link, io-error still waits for the fence", with(func(in *GateInput) { in.Mirroring, in.OnLost = false, IOError }), Wait},
		{"no link, peer fenced", with(func(in *GateInput) { in.Mirroring, in.PeerFenced = false, true }), Pass},
	} {
		if got := Decide(tc.in); got != tc.want {
			t.Errorf("%s: Decide = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCampaign(t *testing.T) {
	ok := Candidate{UpToDate: true, MayStart: true}
	with := func(f func(*Candidate)) Candidate { c := ok; f(&c); return c }
	for _, tc := range []struct {
		name string
		c    Candidate
		want bool
	}{
		{"up to date, may start", ok, true},
		{"outdated", with(func(c *Candidate) { c.Outdated = true }), false},
		{"not up to date", with(func(c *Candidate) { c.UpToDate = false }), false},
		{"switching over", with(func(c *Candidate) { c.Paused = true }), false},
		{"--secondary, nobody holds, impatient", with(func(c *Candidate) { c.MayStart = false }), false},
		{"--secondary, nobody holds, grace over", with(func(c *Candidate) { c.MayStart, c.Patient = false, true }), true},
		{"--secondary, a holder exists", with(func(c *Candidate) { c.MayStart, c.Holding = false, true }), true},
	} {
		got, why := Campaign(tc.c)
		if got != tc.want || got == (why != "") {
			t.Errorf("%s: Campaign = %v %q, want %v", tc.name, got, why, tc.want)
		}
	}
}

func TestPeerFence(t *testing.T) {
	sync := PeerView{Mirroring: true, PeerDisk: "UpToDate", Replication: "Established"}
	for _, tc := range []struct {
		name     string
		p        PeerView
		recorded bool
		want     FenceAction
	}{
		{"link down, not recorded", PeerView{}, false, WriteRecord},
		{"link down, recorded", PeerView{}, true, KeepRecord},
		{"in sync, recorded", sync, true, ClearRecord},
		{"in sync, not recorded", sync, false, KeepRecord},
		{"resyncing", PeerView{Mirroring: true, PeerDisk: "Inconsistent", Replication: "SyncSource"}, true, KeepRecord},
		{"out of sync regions left", PeerView{Mirroring: true, PeerDisk: "UpToDate", Replication: "Established", OutOfSync: 4096}, true, KeepRecord},
	} {
		if got := PeerFence(tc.p, tc.recorded); got != tc.want {
			t.Errorf("%s: PeerFence = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIsOutdated(t *testing.T) {
	rec := &OutdatedRecord{By: "a", Generation: 7}
	if IsOutdated(nil, "b") || IsOutdated(rec, "a") || !IsOutdated(rec, "b") {
		t.Fatal("a record outdates every node but its writer")
	}
}
