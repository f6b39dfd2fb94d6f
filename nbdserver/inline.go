package nbdserver

import (
	"math/bits"
	"time"
)

// The reader runs a small READ or WRITE itself ("inline") while the Backend
// answers such requests quickly, as page-cache I/O does, and a FLUSH that
// is alone on the connection. Inline requests
// cost no goroutine hand-off, their replies leave in one write per burst,
// and only one goroutine per connection calls the Backend, which spares a
// file's inode lock. A Backend that waits (a mirrored write waits for its
// peer, an uncached read for the disk) is called from a goroutine per
// request instead, so requests overlap.
//
// Every inline call is timed. A call is slow if it takes longer than
// slowCall plus slowPerBlock for each 4 KiB it moves; a kind of request runs
// inline while fewer than half of its last 16 timed calls were slow. A
// median, unlike a mean, is not moved by the odd call that a busy machine
// preempts, and a Backend that waits is slow every time.
const (
	// inlineMax is the largest READ or WRITE that may run inline.
	inlineMax    = 64 << 10
	slowCall     = 16 * time.Microsecond
	slowPerBlock = 1 * time.Microsecond
	// probeEvery: one in probeEvery requests of a kind that is not inline
	// runs inline anyway, to notice when the Backend speeds up.
	probeEvery = 64
)

// opKind separates reads from writes: a mirrored Backend reads locally in
// microseconds but waits for its peer to write.
type opKind int

const (
	kindRead opKind = iota
	kindWrite
)

// inlineStats is the reader's record of inline calls, per kind. Owned by
// the reader goroutine.
type inlineStats struct {
	slow  [2]uint16 // one bit per recent timed call, 1 if it was slow
	probe [2]uint32 // requests not run inline, for probing
}

// inlineOverride lets tests force the choice: 1 runs every small READ and
// WRITE inline, -1 none.
var inlineOverride int

// inline decides whether the reader runs r itself.
func (c *conn) inline(r *request) bool {
	var k opKind
	switch r.typ {
	case cmdCache:
		return true
	case cmdFlush:
		// Alone on the connection (its slot is the only one taken, nothing
		// more has arrived), a FLUSH runs here: the reader has nothing else
		// to do while it waits, and a goroutine would only add a hand-off.
		return len(c.slots) == 1 && c.buffered() == 0
	case cmdRead:
		k = kindRead
	case cmdWrite:
		k = kindWrite
	default:
		return false
	}
	if r.length > inlineMax {
		return false
	}
	if inlineOverride != 0 {
		return inlineOverride > 0
	}
	if bits.OnesCount16(c.lat.slow[k]) < 8 {
		return true
	}
	c.lat.probe[k]++
	return c.lat.probe[k]%probeEvery == 0
}

// execInline runs r on the reader, times it and holds its reply.
func (c *conn) execInline(r *request) {
	t0 := time.Now()
	c.exec(r)
	if r.typ == cmdRead || r.typ == cmdWrite {
		k := kindRead
		if r.typ == cmdWrite {
			k = kindWrite
		}
		limit := slowCall + time.Duration(r.length>>12)*slowPerBlock
		slow := uint16(0)
		if time.Since(t0) > limit {
			slow = 1
		}
		c.lat.slow[k] = c.lat.slow[k]<<1 | slow
	}
	c.srv.stats.count(r)
	c.hold(r)
}
