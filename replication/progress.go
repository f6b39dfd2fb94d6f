package replication

import (
	"math"
	"time"
)

// How a resync's rate is measured: over steps of at least meterStep, each
// step's rate weighted into a running average that forgets with time
// constant meterTau. The ETA then follows a rate that changes (a resync
// that yields to application I/O, a link that slows) within a few seconds,
// without jumping with every ack.
const (
	meterStep = 250 * time.Millisecond
	meterTau  = 2 * time.Second
)

// rateMeter measures the rate at which a count grows.
type rateMeter struct {
	at   time.Time // start of the step under way
	base int64     // the count at at
	rate float64   // bytes per second; 0 until the first step ended
}

// note records that the count is done at now.
func (m *rateMeter) note(now time.Time, done int64) {
	if m.at.IsZero() {
		m.at, m.base = now, done
		return
	}
	dt := now.Sub(m.at)
	if dt < meterStep {
		return
	}
	step := float64(done-m.base) / dt.Seconds()
	if m.rate == 0 {
		m.rate = step
	} else {
		m.rate += (1 - math.Exp(-dt.Seconds()/meterTau.Seconds())) * (step - m.rate)
	}
	m.at, m.base = now, done
}

// estimate is the rate at now: the average so far, with the step under
// way counted once it is long enough (so that a stall shows), or that
// step's own rate before any step ended; 0 (unknown) for meterStep/5
// after the first note.
func (m rateMeter) estimate(now time.Time, done int64) float64 {
	if m.at.IsZero() {
		return 0
	}
	if m.rate == 0 {
		if dt := now.Sub(m.at); dt >= meterStep/5 {
			return float64(done-m.base) / dt.Seconds()
		}
		return 0
	}
	m.note(now, done)
	return m.rate
}

// restart begins a new resync's progress at now: nothing known, nothing done.
func (s *resyncState) restart(now time.Time) {
	s.total, s.done, s.base, s.started = 0, 0, 0, now
	s.meter = rateMeter{}
}

// beginPass starts a pass that has bytes to move, as far as known yet.
func (s *resyncState) beginPass(bytes int64) {
	s.base = max(s.total, s.done)
	s.total = s.base + bytes
}

// add counts n bytes the peer acknowledged. The rate is measured from the
// first acknowledgement on: the handshake, the bitmaps' exchange and the
// first record's round trip before it are not the rate of the transfer.
func (s *resyncState) add(n int64, now time.Time) {
	s.done += n
	s.meter.note(now, s.done)
}

// progressAt is the progress at now: done never above total, the rate as
// measured lately, the ETA at that rate.
func (s resyncState) progressAt(now time.Time) ResyncStatus {
	p := ResyncStatus{TotalBytes: max(s.total, s.done), DoneBytes: s.done}
	p.BytesPerSec = max(s.meter.estimate(now, s.done), 0)
	if p.BytesPerSec > 0 && p.TotalBytes > p.DoneBytes {
		p.ETASeconds = float64(p.TotalBytes-p.DoneBytes) / p.BytesPerSec
	}
	return p
}
