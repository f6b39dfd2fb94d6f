package nbdserver

import "sync/atomic"

// Stats is a snapshot of a Server's counters since it was created.
type Stats struct {
	Reads        uint64 // READ commands completed
	Writes       uint64 // WRITE commands completed, FUA or not
	FUAWrites    uint64 // WRITE commands completed with NBD_CMD_FLAG_FUA
	Flushes      uint64 // FLUSH commands completed
	Trims        uint64 // TRIM commands completed
	Zeroes       uint64 // WRITE_ZEROES commands completed
	BytesRead    uint64 // payload bytes sent in READ replies
	BytesWritten uint64 // payload bytes applied by WRITE
	Errors       uint64 // replies that carried an error, invalid requests included
	Connections  uint64 // connections that entered the transmission phase
	// TLSConnections counts the connections that completed STARTTLS;
	// RefusedConnections those closed at once at Options.MaxConnections.
	TLSConnections, RefusedConnections uint64
	// PolledReads and SleptReads count the socket reads of requests whose
	// data came while the reader polled, and those for which it slept
	// (Options.Poll); both stay 0 with polling off.
	PolledReads, SleptReads uint64
}

// counters are updated with single atomic adds on the request path.
type counters struct {
	reads, writes, fuaWrites, flushes, trims, zeroes atomic.Uint64
	bytesRead, bytesWritten, errors, connections     atomic.Uint64
	polled, slept                                    atomic.Uint64
	tlsConnections, refused                          atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Reads:        c.reads.Load(),
		Writes:       c.writes.Load(),
		FUAWrites:    c.fuaWrites.Load(),
		Flushes:      c.flushes.Load(),
		Trims:        c.trims.Load(),
		Zeroes:       c.zeroes.Load(),
		BytesRead:    c.bytesRead.Load(),
		BytesWritten: c.bytesWritten.Load(),
		Errors:       c.errors.Load(),
		Connections:  c.connections.Load(),

		TLSConnections:     c.tlsConnections.Load(),
		RefusedConnections: c.refused.Load(),
		PolledReads:        c.polled.Load(),
		SleptReads:         c.slept.Load(),
	}
}

// count records a completed request.
func (c *counters) count(r *request) {
	if r.errno != 0 {
		c.errors.Add(1)
		return
	}
	switch r.typ {
	case cmdRead:
		c.reads.Add(1)
		c.bytesRead.Add(uint64(r.length))
	case cmdWrite:
		c.writes.Add(1)
		c.bytesWritten.Add(uint64(r.length))
		if r.flags&cmdFlagFUA != 0 {
			c.fuaWrites.Add(1)
		}
	case cmdFlush:
		c.flushes.Add(1)
	case cmdTrim:
		c.trims.Add(1)
	case cmdWriteZeroes:
		c.zeroes.Add(1)
	}
}
