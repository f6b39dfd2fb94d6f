package journal

import (
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// TestObserveStages: with Options.Observe, writes, syncs, applies and
// checkpoints are each timed under their stage.
func TestObserveStages(t *testing.T) {
	var mu sync.Mutex
	seen := map[Stage]int{}
	o := Options{CheckpointInterval: -1, Logger: quiet, Observe: func(s Stage, d time.Duration) {
		if d < 0 {
			t.Errorf("%v took %v", s, d)
		}
		mu.Lock()
		seen[s]++
		mu.Unlock()
	}}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	c := NewCompressor(CodecNone)
	for i := range 8 {
		if _, err := j.write(c.Write(int64(i)*4096, make([]byte, 4096)), i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.checkpoint(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []Stage{StageWrite, StageSync, StageApply, StageCheckpoint} {
		if seen[s] == 0 {
			t.Errorf("no %v step observed: %v", s, seen)
		}
	}
}
