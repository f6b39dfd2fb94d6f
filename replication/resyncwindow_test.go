package replication

import (
	"bytes"
	"testing"
	"time"
)

// rateDisk is a memory disk that takes as long as a device writing rate
// bytes per second would for each write: the time a loaded target spends.
type rateDisk struct {
	memDisk
	rate int64
}

func (d rateDisk) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(int64(len(p)) * int64(time.Second) / d.rate))
	return d.memDisk.WriteAt(p, off)
}

// TestLoneWritesDuringABitmapResyncToASlowTarget: a client write sent to a
// SyncTarget goes on the link behind the resync data in flight before it.
// The target acks resync data once journaled, not once on its disk, so a
// lone write to a target whose disk writes 8 MiB/s waits a fraction of a
// second for its ack during a 48 MiB resync, not the 4 s that the resync's
// 32 MiB window would take to reach that disk.
func TestLoneWritesDuringABitmapResyncToASlowTarget(t *testing.T) {
	const size, gap = 64 << 20, 48 << 20
	p := openPairWith(t, size, func(pc, sc *Config) {
		sc.Disk = rateDisk{memDisk: sc.Disk.(memDisk), rate: 8 << 20}
		pc.ResyncMinRate = 1 << 20
		pc.FS, sc.FS = nil, nil // the OS's: the memory one's crash model is slow at this size
	}, nil)
	p.waitInSync(t)
	p.primary.Disconnect()
	p.primary.oos.mark(0, gap)       // as if written apart: a bitmap resync of 48 MiB
	p.secondary.oos.mark(4096, 4096) // marks on the Secondary: the tail cannot serve it
	p.primary.Connect()
	until(t, "no bitmap resync", func() bool {
		r := p.primary
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.resync.source && !r.resync.tail && r.resync.total > 0
	})
	var worst time.Duration
	for i := range 40 {
		start := time.Now()
		if _, err := p.primary.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), gap+int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("the longest of 40 lone writes during the resync: %v", worst)
	// A liveness bound with a margin for a loaded machine, under the full
	// window's 4 s at the disk's rate.
	if worst > 2*time.Second {
		t.Errorf("a lone write waited %v for a target busy with the resync", worst)
	}
}
