package checker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// memDevice is a device in memory that can refuse writes after a point and
// can lose (un-acknowledge) or tear blocks, to check the checker itself.
type memDevice struct {
	mu     sync.Mutex
	data   []byte
	writes int
	failAt int // writes after this many fail (0: never)
}

var errDown = errors.New("device down")

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.data[off:]), nil
}

func (m *memDevice) WriteFUA(p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAt > 0 && m.writes >= m.failAt {
		return errDown
	}
	m.writes++
	copy(m.data[off:], p)
	return nil
}

func (m *memDevice) Flush() error { return nil }

func runUntilDown(t *testing.T, blocks, failAt int) (*Checker, *memDevice) {
	t.Helper()
	dev := &memDevice{data: make([]byte, blocks*BlockSize), failAt: failAt}
	ck := New(Options{Blocks: blocks, InFlight: 8, FUAEvery: 3, FlushEvery: 50, Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ck.Run(ctx, dev); !errors.Is(err, errDown) {
		t.Fatalf("Run: %v, want the device's failure", err)
	}
	return ck, dev
}

func TestVerifyPassesAnIntactDevice(t *testing.T) {
	ck, dev := runUntilDown(t, 64, 2000)
	rep, err := ck.Verify(dev)
	if err != nil || !rep.OK() || rep.Acked != 2000 || rep.Written == 0 {
		t.Fatalf("report %+v, err %v", rep, err)
	}
}

func TestVerifyFindsLostTornAndForeignBlocks(t *testing.T) {
	ck, dev := runUntilDown(t, 64, 2000)
	var b int
	for b = range ck.acked {
		if ck.acked[b] > 0 {
			break
		}
	}
	off := b * BlockSize
	good := append([]byte(nil), dev.data[off:off+BlockSize]...)

	clear(dev.data[off : off+BlockSize]) // the acknowledged write vanished
	if rep, _ := ck.Verify(dev); rep.Lost != 1 || rep.OK() {
		t.Fatalf("zeroed block: %+v", rep)
	}
	copy(dev.data[off:], good)
	dev.data[off+100] ^= 1 // half-written
	if rep, _ := ck.Verify(dev); rep.Torn != 1 {
		t.Fatalf("torn block: %+v", rep)
	}
	stamp(dev.data[off:off+BlockSize], b, ck.acked[b]-1+ck.issued[b]+1) // a counter never sent there
	if rep, _ := ck.Verify(dev); rep.Foreign != 1 {
		t.Fatalf("foreign block: %+v", rep)
	}
	if ck.acked[b] > 1 {
		stamp(dev.data[off:off+BlockSize], b, ck.acked[b]-1) // an older write
		if rep, _ := ck.Verify(dev); rep.Lost+rep.Foreign != 1 {
			t.Fatalf("older block: %+v", rep)
		}
	}
}

// staleDevice serves every read from a copy that lags one write behind.
type staleDevice struct {
	memDevice
	old []byte // the data before the last write
}

func (s *staleDevice) WriteFUA(p []byte, off int64, fua bool) error {
	s.mu.Lock()
	s.old = append(s.old[:0], s.data...)
	s.mu.Unlock()
	return s.memDevice.WriteFUA(p, off, fua)
}

func (s *staleDevice) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return copy(p, s.old[off:]), nil
}

func TestReadBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	dev := &memDevice{data: make([]byte, 64*BlockSize)}
	ck := New(Options{Blocks: 64, InFlight: 8, FUAEvery: 3, FlushEvery: 50, Seed: 1, ReadBack: true})
	if err := ck.Run(ctx, dev); err != nil || ck.ReadBacks() == 0 || ck.ReadBacks() != ck.Acked() {
		t.Fatalf("an intact device: %v, %d reads back of %d writes", err, ck.ReadBacks(), ck.Acked())
	}
	stale := &staleDevice{memDevice: memDevice{data: make([]byte, 64*BlockSize)}}
	ck = New(Options{Blocks: 64, InFlight: 1, Seed: 1, ReadBack: true})
	if err := ck.Run(context.Background(), stale); !errors.Is(err, ErrStaleRead) {
		t.Fatalf("a device that reads one write behind: %v", err)
	}
}
