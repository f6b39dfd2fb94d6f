// Package checker proves that no acknowledged write is lost. It writes
// stamped blocks to an NBD export with many requests in flight, FUA and
// FLUSH mixed in, and records every write the server acknowledged. After a
// crash or a failover it reads the device back: every block must hold its
// last acknowledged write or a newer one, and no block may be torn.
//
//	ck := checker.New(checker.Options{Blocks: 4096})
//	go ck.Run(ctx, client)       // until ctx ends or the server dies
//	... kill the server, restart or fail over ...
//	rep, err := ck.Verify(newClient)
//	if rep.Lost > 0 || rep.Torn > 0 { ... }
package checker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// BlockSize is the size of one stamped block.
const BlockSize = 4096

// magic opens every stamped block.
const magic = 0x6e62646d53544d50 // "nbdmSTMP"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options shape the load.
type Options struct {
	Blocks     int   // blocks in the working set, from offset Base
	Base       int64 // byte offset of block 0
	InFlight   int   // requests in flight at once (default 32)
	FUAEvery   int   // every Nth write carries FUA (0: never)
	FlushEvery int   // a FLUSH after every Nth write (0: never)
	Seed       uint64
	// ReadBack reads every block back as soon as its write is
	// acknowledged, before another write may go to it: the read must
	// return that very stamp (Run fails with ErrStaleRead otherwise).
	ReadBack bool
}

// ErrStaleRead is a read back (Options.ReadBack) that did not return the
// write just acknowledged.
var ErrStaleRead = errors.New("checker: stale read")

// Device is the part of an NBD client the checker uses.
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteFUA(p []byte, off int64, fua bool) error
	Flush() error
}

// Checker writes and verifies stamped blocks. Run and Verify must not
// overlap.
type Checker struct {
	o Options

	// mu guards the per-block state, shared by Run's writers.
	mu       sync.Mutex
	acked    []uint64 // newest acknowledged counter per block (0: none)
	issued   []uint64 // newest counter sent per block
	busy     []bool   // a write to the block is in flight
	counter  uint64   // last counter handed out
	ackCount atomic.Uint64
	readBack atomic.Uint64 // reads back that found their stamp
	runs     atomic.Uint64 // Run calls, so each run picks other blocks
}

// New makes a checker for a working set of o.Blocks blocks.
func New(o Options) *Checker {
	if o.InFlight <= 0 {
		o.InFlight = 32
	}
	return &Checker{o: o, acked: make([]uint64, o.Blocks), issued: make([]uint64, o.Blocks),
		busy: make([]bool, o.Blocks)}
}

// Acked is the number of writes acknowledged so far.
func (c *Checker) Acked() uint64 { return c.ackCount.Load() }

// ReadBacks is the number of reads back (Options.ReadBack) that found the
// write just acknowledged.
func (c *Checker) ReadBacks() uint64 { return c.readBack.Load() }

// Run writes until ctx ends or a request fails (the server died), and
// returns the first failure or nil. Acknowledged writes are recorded either way.
func (c *Checker) Run(ctx context.Context, dev Device) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, c.o.InFlight)
	run := c.runs.Add(1)
	for w := range c.o.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.writer(ctx, dev, rand.New(rand.NewPCG(c.o.Seed+run, uint64(w)))); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (c *Checker) writer(ctx context.Context, dev Device, rng *rand.Rand) error {
	buf := make([]byte, BlockSize)
	for ctx.Err() == nil {
		b, n := c.claim(rng)
		if b < 0 {
			continue
		}
		stamp(buf, b, n)
		fua := c.o.FUAEvery > 0 && n%uint64(c.o.FUAEvery) == 0
		err := dev.WriteFUA(buf, c.o.Base+int64(b)*BlockSize, fua)
		var rerr error
		if err == nil && c.o.ReadBack {
			rerr = c.readBackOne(dev, b, n)
		}
		c.release(b, n, err == nil)
		if err != nil {
			return fmt.Errorf("checker: write of block %d: %w", b, err)
		}
		if rerr != nil {
			return rerr
		}
		if c.o.FlushEvery > 0 && n%uint64(c.o.FlushEvery) == 0 {
			if err := dev.Flush(); err != nil {
				return fmt.Errorf("checker: flush: %w", err)
			}
		}
	}
	return nil
}

// readBackOne reads block b, whose write n was just acknowledged and
// which no other write touches meanwhile: it must hold stamp n.
func (c *Checker) readBackOne(dev Device, b int, n uint64) error {
	buf := make([]byte, BlockSize)
	if _, err := dev.ReadAt(buf, c.o.Base+int64(b)*BlockSize); err != nil {
		return fmt.Errorf("checker: read back of block %d: %w", b, err)
	}
	got, err := parse(buf, b)
	switch {
	case err != nil:
		return fmt.Errorf("%w: block %d after write %d acknowledged: %v", ErrStaleRead, b, n, err)
	case got != n:
		return fmt.Errorf("%w: block %d holds write %d, write %d was acknowledged", ErrStaleRead, b, got, n)
	}
	c.readBack.Add(1)
	return nil
}

// claim picks a block with no write in flight, so writes to one block are
// ordered and its newest acknowledged stamp is well defined.
func (c *Checker) claim(rng *rand.Rand) (int, uint64) {
	b := rng.IntN(c.o.Blocks)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[b] {
		return -1, 0
	}
	c.busy[b] = true
	c.counter++
	c.issued[b] = c.counter
	return b, c.counter
}

func (c *Checker) release(b int, n uint64, acked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy[b] = false
	if acked {
		c.acked[b] = n
		c.ackCount.Add(1)
	}
}

// stamp fills buf with block b's content for counter n: a header, data
// derived from both, and a checksum over everything before it.
func stamp(buf []byte, b int, n uint64) {
	binary.LittleEndian.PutUint64(buf[0:], magic)
	binary.LittleEndian.PutUint64(buf[8:], uint64(b))
	binary.LittleEndian.PutUint64(buf[16:], n)
	x := uint64(b)*0x9e3779b97f4a7c15 ^ n
	for i := 24; i < BlockSize-4; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(buf[i:], x)
	}
	binary.LittleEndian.PutUint32(buf[BlockSize-4:], crc32.Checksum(buf[:BlockSize-4], castagnoli))
}

// Report is what Verify found.
type Report struct {
	Checked  int    // blocks read
	Written  int    // blocks with an acknowledged write
	Lost     int    // blocks older than their last acknowledged write
	Torn     int    // blocks that are neither zero nor a whole stamp
	Foreign  int    // whole stamps that were never sent to that block
	Acked    uint64 // writes acknowledged during Run
	FirstBad string // the first finding, for the log
}

// OK is true when nothing was lost, torn or foreign.
func (r Report) OK() bool { return r.Lost == 0 && r.Torn == 0 && r.Foreign == 0 }

// Verify reads every block back and checks it against what was acknowledged.
func (c *Checker) Verify(dev Device) (Report, error) {
	rep := Report{Acked: c.Acked()}
	buf := make([]byte, BlockSize)
	for b := range c.o.Blocks {
		if _, err := dev.ReadAt(buf, c.o.Base+int64(b)*BlockSize); err != nil {
			return rep, fmt.Errorf("checker: read of block %d: %w", b, err)
		}
		rep.Checked++
		if c.acked[b] > 0 {
			rep.Written++
		}
		f, what := c.classify(buf, b)
		rep.count(f)
		if f != fine && rep.FirstBad == "" {
			rep.FirstBad = what
		}
	}
	return rep, nil
}

type finding int

const (
	fine finding = iota
	lost
	torn
	foreign
)

func (r *Report) count(f finding) {
	switch f {
	case lost:
		r.Lost++
	case torn:
		r.Torn++
	case foreign:
		r.Foreign++
	}
}

// classify judges block b's content and says what is wrong with it.
func (c *Checker) classify(buf []byte, b int) (finding, string) {
	n, err := parse(buf, b)
	switch {
	case errors.Is(err, errZero) && c.acked[b] > 0:
		return lost, fmt.Sprintf("block %d is zero, last acknowledged write %d", b, c.acked[b])
	case errors.Is(err, errZero):
		return fine, ""
	case err != nil:
		return torn, fmt.Sprintf("block %d is torn: %v", b, err)
	case n > c.issued[b] || n == 0:
		return foreign, fmt.Sprintf("block %d holds write %d, never sent to it (newest sent %d)", b, n, c.issued[b])
	case n < c.acked[b]:
		return lost, fmt.Sprintf("block %d holds write %d, last acknowledged %d", b, n, c.acked[b])
	}
	return fine, ""
}

var errZero = errors.New("checker: zero block")

// parse returns the counter of a whole stamp for block b.
func parse(buf []byte, b int) (uint64, error) {
	if allZero(buf) {
		return 0, errZero
	}
	if binary.LittleEndian.Uint32(buf[BlockSize-4:]) != crc32.Checksum(buf[:BlockSize-4], castagnoli) {
		return 0, errors.New("checksum mismatch")
	}
	if binary.LittleEndian.Uint64(buf) != magic || binary.LittleEndian.Uint64(buf[8:]) != uint64(b) {
		return 0, errors.New("stamp of another block")
	}
	return binary.LittleEndian.Uint64(buf[16:]), nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
