package replication

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestCloseAnswersEveryWrite: the Primary of a pair is closed while
// writes, most of them made in place, are in flight on its link and in its
// journal, and while more are submitted. Once Close and every WriteAsync
// call have returned, each write's callback has run exactly once: none
// was dropped (nor run twice) by the request pool, the journal's Close or
// the link's teardown.
func TestCloseAnswersEveryWrite(t *testing.T) {
	for round := range 2 {
		p := openPairWith(t, testSize, func(pc, sc *Config) {
			pc.JournalDataMax, sc.JournalDataMax = 8<<10, 8<<10
		}, nil)
		p.waitInSync(t)
		const writers, each = 8, 60
		calls := make([]atomic.Int32, writers*each)
		var answered atomic.Int32
		flowing := make(chan struct{})
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for i := range each {
					n := (1 + rnd.IntN(4)) * 4096 // 2 to 4 blocks go in place
					off := int64(rnd.IntN(testSize/4096-4)) * 4096
					k := w*each + i
					p.primary.WriteAsync(make([]byte, n), off, rnd.IntN(8) == 0, rnd.IntN(2) == 0, func(error) {
						calls[k].Add(1)
						if answered.Add(1) == writers*each/4 {
							close(flowing)
						}
					})
				}
			}()
		}
		<-flowing
		if err := p.primary.Close(); err != nil {
			t.Logf("round %d: Close: %v", round, err)
		}
		wg.Wait()
		for k := range calls {
			if n := calls[k].Load(); n != 1 {
				t.Errorf("round %d: write %d answered %d times, want once", round, k, n)
			}
		}
	}
}
