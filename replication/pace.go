package replication

import "time"

// Resync pacing. A resync goes as fast as the disk and the link allow,
// under --resync-rate when set. While the application does I/O it yields,
// as DRBD does with c-min-rate: it slows to Config.ResyncMinRate, so that
// the application gets the disk, but never stops. A journal tail carries
// the writers' new records too, so it yields to the minimum rate plus what
// they write: its gap still shrinks at the minimum rate.
//
// The decisions are pure functions (paceLimit, pace, appWatch.busy);
// pacer holds their state and does the waiting.

const (
	// paceSpan: a window in which the resync fell behind its limit (it
	// waited for the disk, the link or acks) starts afresh after it, so
	// the time lost is not made up in a burst longer than paceSpan's worth.
	paceSpan = time.Second
	// appQuiet: the application is busy while its I/O counters moved
	// within the last appQuiet.
	appQuiet = 200 * time.Millisecond
)

// paceLimit is the rate, in bytes per second, a resync may take now; 0 is
// no limit. rate is --resync-rate (0: none), minRate the floor it yields to
// while the application is busy (0: it never yields), appRate what the
// application writes per second into what the resync carries (a journal
// tail), else 0.
func paceLimit(rate, minRate int64, appBusy bool, appRate int64) int64 {
	if !appBusy || minRate <= 0 {
		return rate
	}
	yield := minRate + max(appRate, 0)
	if rate > 0 && rate < yield {
		return rate
	}
	return yield
}

// paceWindow is what was sent under limit since start.
type paceWindow struct {
	start time.Time
	sent  int64
	limit int64
}

// pace accounts n bytes sent at now under limit (0: none) and returns the
// window after them and how long to wait before sending more. A new
// window starts when the limit changes, and after paceSpan if the resync
// is not ahead of its limit.
func pace(w paceWindow, now time.Time, n, limit int64) (paceWindow, time.Duration) {
	if limit <= 0 {
		return paceWindow{}, 0
	}
	if w.limit != limit || w.start.IsZero() || now.Sub(w.start) > paceSpan && w.due().Before(now) {
		w = paceWindow{start: now, limit: limit}
	}
	w.sent += n
	return w, max(w.due().Sub(now), 0)
}

// due is when the bytes sent in the window fit its limit.
func (w paceWindow) due() time.Time {
	return w.start.Add(time.Duration(float64(w.sent) / float64(w.limit) * float64(time.Second)))
}

// appWatch tells from the application's I/O counters whether it is busy,
// and measures its write rate.
type appWatch struct {
	ops     uint64    // reads and writes, when last seen
	changed time.Time // when ops last moved
	written rateMeter // bytes written
}

// busy notes the counters at now and says whether ops moved within
// appQuiet. The first call only notes them: I/O before the resync began
// does not count.
func (a *appWatch) busy(now time.Time, ops, written uint64) bool {
	a.written.note(now, int64(written))
	if a.changed.IsZero() {
		a.ops, a.changed = ops, now.Add(-appQuiet)
		return false
	}
	if ops != a.ops {
		a.ops, a.changed = ops, now
	}
	return now.Sub(a.changed) < appQuiet
}

// pacer paces one resync pass (see the package's pacing notes above).
type pacer struct {
	r       *Resource
	rate    int64 // --resync-rate when the pass began
	tail    bool  // the pass carries the writers' records
	w       paceWindow
	app     appWatch
	waiting time.Duration // waited in all, for the log
}

func (r *Resource) newPacer(tail bool) *pacer {
	p := &pacer{r: r, rate: r.resyncRate.Load(), tail: tail}
	p.app.busy(time.Now(), r.appOps(), r.bytesWritten.Load())
	return p
}

// appOps counts the application's reads and writes.
func (r *Resource) appOps() uint64 { return r.reads.Load() + r.writes.Load() }

// wait accounts n bytes and sleeps until the resync may send more, or stop
// closes.
func (p *pacer) wait(n int64, stop <-chan struct{}) {
	now := time.Now()
	written := p.r.bytesWritten.Load()
	busy := p.app.busy(now, p.r.appOps(), written)
	var appRate int64
	if p.tail && busy {
		appRate = int64(p.app.written.estimate(now, int64(written)))
	}
	var d time.Duration
	p.w, d = pace(p.w, now, n, paceLimit(p.rate, p.r.cfg.ResyncMinRate, busy, appRate))
	if d <= 0 {
		return
	}
	p.waiting += d
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// lagFor is how many bytes a resync may keep in flight on the link when
// the peer acknowledges rate bytes per second (0: not measured yet): what
// it takes in tune.resyncPlanAhead, at least tune.resyncWindowMin and at
// most most. A client write shares the link with the resync and queues
// behind what is in flight: so it waits about resyncPlanAhead however
// slow the target, as DRBD's c-plan-ahead controller keeps its resync's
// fill. With a fixed 32 MiB, a lone write behind 24 MiB to a disk taking
// 8 MiB/s waited 2.7 s, past a 2 s --peer-timeout
// (TestLoneWriteBehindAResyncToASlowPeer). A fast target still gets most.
func lagFor(rate float64, most uint64) uint64 {
	w := uint64(rate * tune.resyncPlanAhead.Seconds())
	return min(max(w, tune.resyncWindowMin), most)
}

// resyncLag is lagFor the rate the resync under way has been acknowledged at.
func (r *Resource) resyncLag(most uint64) uint64 {
	r.mu.Lock()
	rate := r.resync.meter.estimate(time.Now(), r.resync.done)
	r.mu.Unlock()
	return lagFor(rate, most)
}
