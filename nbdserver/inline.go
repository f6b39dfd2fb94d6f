package nbdserver

import (
	"syscall"
	"time"
	"unsafe"
)

// The reader runs a small READ or WRITE itself ("inline") when that is
// cheaper than handing it to a goroutine: always when the client is waiting
// on this request alone, and under load while the Backend computes rather
// than waits. Inline requests cost no goroutine hand-off, their replies
// leave in one write per burst, and only one goroutine per connection calls
// the Backend, which spares a file's inode lock. A Backend that waits (on a
// peer, on a disk) is called from a goroutine per request instead, so
// requests overlap.
//
// Computing and waiting are told apart by sampling, around an inline call,
// both the wall time and the thread's CPU time: page-cache I/O is nearly all
// CPU, a mirrored write or a disk read is nearly all waiting.
const (
	// inlineMax is the largest READ or WRITE that may run inline.
	inlineMax = 64 << 10
	// inlineWait: while sampled inline calls of a kind wait less than this
	// on average, that kind runs inline under load.
	inlineWait = 10 * time.Microsecond
	// sampleEvery: one inline call in sampleEvery is timed (a thread CPU
	// clock read is a system call).
	sampleEvery = 16
	// probeEvery: under load, one in probeEvery requests of a kind that is
	// not inline runs inline anyway, timed, to notice when the Backend
	// stops waiting.
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
	wait  [2]time.Duration // moving average of the waiting part of timed calls
	calls [2]uint32        // inline calls, for sampling
	probe [2]uint32        // requests not run inline, for probing
}

// inlineOverride lets tests force the choice: 1 runs every small READ and
// WRITE inline, -1 none.
var inlineOverride int

// inline decides whether the reader runs r itself, and whether to time it.
func (c *conn) inline(r *request) (inline, timed bool) {
	var k opKind
	switch r.typ {
	case cmdCache:
		return true, false
	case cmdRead:
		k = kindRead
	case cmdWrite:
		k = kindWrite
	default:
		return false, false
	}
	if r.length > inlineMax {
		return false, false
	}
	if inlineOverride != 0 {
		return inlineOverride > 0, false
	}
	if c.busy.Load() == 0 && c.br.Buffered() == 0 || c.lat.wait[k] < inlineWait {
		c.lat.calls[k]++
		return true, c.lat.calls[k]%sampleEvery == 0
	}
	c.lat.probe[k]++
	if c.lat.probe[k]%probeEvery == 0 {
		return true, true
	}
	return false, false
}

// execInline runs r on the reader and holds its reply; if timed, it records
// how long the call waited.
func (c *conn) execInline(r *request, timed bool) {
	if !timed {
		c.exec(r)
	} else {
		t0, cpu0 := time.Now(), threadCPUTime()
		c.exec(r)
		cpu, wall := threadCPUTime()-cpu0, time.Since(t0)
		// The goroutine may have moved to another thread in between: then
		// the CPU time is meaningless and the sample is dropped.
		if cpu >= 0 && cpu <= wall+time.Microsecond {
			k := kindRead
			if r.typ == cmdWrite {
				k = kindWrite
			}
			c.lat.wait[k] += (max(wall-cpu, 0) - c.lat.wait[k]) / 4
		}
	}
	c.srv.stats.count(r)
	c.hold(r)
}

// threadCPUTime returns the CPU time of the calling thread.
func threadCPUTime() time.Duration {
	const clockThreadCPUTimeID = 3 // CLOCK_THREAD_CPUTIME_ID
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}
