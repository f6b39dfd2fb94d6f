package replication

import "time"

// tuning holds every number that shapes how the replication path waits,
// retries and batches, so that none hides in the code that uses it. The
// numbers that define a format (RegionSize, the bitmap file's layout, the
// checksum block) stay beside that format; the ones a user sets are in
// Config (PeerTimeout, PeerPoll, the resync rate).
type tuning struct {
	// Link set-up and teardown.

	// dialMin and dialMax bound the dialer's backoff after a failed dial
	// or handshake: it doubles from dialMin, plus up to half of it in
	// jitter, and is reset by a link that came up. dialMax bounds how long
	// a peer that comes back (restarted, or its StandAlone ended) may wait
	// for the next dial: 3 s with jitter, within the simulation's 5 s to
	// settle (at 5 s, 7.5 s with jitter, a node could sit out a whole
	// settle window behind a StandAlone peer it had not dialed yet).
	dialMin, dialMax time.Duration
	// acceptRetry is the pause after the listener fails to accept (out of
	// descriptors, say), so that a persistent error does not spin.
	acceptRetry time.Duration
	// linkStable, flapMin and flapMax: a link that fails before it lived
	// linkStable without carrying a client write both ways makes the next
	// one wait, flapMin doubling up to flapMax (see nextFlapDelay).
	linkStable, flapMin, flapMax time.Duration
	// byeGrace bounds how long close waits for the Bye to be written
	// before it takes the link down anyway: a peer that reads nothing
	// holds it up.
	byeGrace time.Duration
	// pingsPerTimeout is how many pings the sender sends per PeerTimeout
	// (and how often it checks that the peer is alive).
	pingsPerTimeout int

	// recordsFrame is the size from which a Records frame takes no more
	// records. The peer handles a frame's records only once the whole frame
	// is read and its checksum checked: a frame of a resync's window (32
	// MiB) holds its first record back until its last arrives. Measured
	// when the frame was also copied whole into a buffer, checked, and
	// copied again record by record (the peer now reads each payload into
	// its own buffer, see wire.NewDataReader): with 2 MiB frames the
	// target of a bitmap resync took about a third less CPU; lone 4 KiB
	// records still share a frame by hundreds.
	recordsFrame int

	// Resync.

	// tailMaxPending bounds the bytes of a journal tail in flight on the
	// link; tailReadAhead is how many of its records are read ahead.
	tailMaxPending uint64
	tailReadAhead  int
	// maxRun is the most regions one bitmap resync record carries.
	maxRun int64
	// resyncWindow bounds the bytes of a bitmap resync in flight on the
	// link; resyncReadAhead is how many runs are read ahead of the send.
	resyncWindow    uint64
	resyncReadAhead int
	// resyncPlanAhead is how long the peer takes, at the rate it
	// acknowledged so far, to take what a resync (bitmap or tail) keeps in
	// flight, and so about how long a client write queued behind it waits
	// (see resyncLag); resyncWindowMin is the least in flight, two runs.
	resyncPlanAhead time.Duration
	resyncWindowMin uint64
	// chunkWords is the most bitmap words one BitmapChunk frame carries.
	chunkWords int
	// sumBlocks is how many checksum blocks one SumRequest asks for.
	sumBlocks uint64
	// sumTimeouts is how many PeerTimeouts a checksum answer may take: the
	// peer reads and hashes sumBlocks blocks first.
	sumTimeouts time.Duration

	// Durable state.

	// bitmapSave is how often the bitmap's changed pages are saved.
	bitmapSave time.Duration
}

// tune is the package's tuning. Each value was chosen by measurement or by
// the failure it bounds; the comments above say which.
var tune = tuning{
	dialMin:         100 * time.Millisecond,
	dialMax:         2 * time.Second,
	acceptRetry:     100 * time.Millisecond,
	linkStable:      time.Second,
	flapMin:         100 * time.Millisecond,
	flapMax:         2 * time.Second,
	byeGrace:        time.Second,
	pingsPerTimeout: 4,
	recordsFrame:    2 << 20,
	tailMaxPending:  32 << 20,
	tailReadAhead:   16,
	maxRun:          256,
	resyncWindow:    32 << 20,
	resyncReadAhead: 4,
	resyncPlanAhead: 250 * time.Millisecond,
	resyncWindowMin: 2 << 20,
	chunkWords:      32 << 10,
	sumBlocks:       1024, // 64 MiB
	sumTimeouts:     10,
	bitmapSave:      time.Second,
}
