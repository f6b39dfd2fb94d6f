//go:build simbugs

package sim

import (
	"testing"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
)

// Each planted bug (see replication/internal/plant) must be reported by
// its invariant within a bounded number of seeds:
//
//	go test -tags simbugs ./replication/sim -run TestPlanted
func TestPlanted(t *testing.T) {
	known := KnownBugs()
	withCrash := KnownBugs()
	delete(withCrash.Skip, Crash)
	withPromote := KnownBugs()
	delete(withPromote.Skip, Promote)
	for _, c := range []struct {
		name  string
		bug   plant.Bug
		inv   string
		opt   Options
		seeds int
	}{
		{"AckBeforePeer", plant.AckBeforePeer, InvAcked, withCrash, 300},
		{"SkipMarkWhenDown", plant.SkipMarkWhenDown, InvIdentical, withCrash, 300},
		{"ApplyOutOfOrder", plant.ApplyOutOfOrder, InvIdentical, known, 500},
		{"PeerAlwaysUpToDate", plant.PeerAlwaysUpToDate, InvHonesty, known, 300},
		{"MergeSplitBrain", plant.MergeSplitBrain, InvSplitBrain, Options{Skip: knownKinds()}, 1000},
		{"PromoteOverPrimary", plant.PromoteOverPrimary, InvTwoPrimaries, withPromote, 500},
		{"LeakLinkGoroutine", plant.LeakLinkGoroutine, InvLeak, known, 50},
		{"ForgetWaiters", plant.ForgetWaiters, InvLiveness, known, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			plant.Set(c.bug)
			defer plant.Set(0)
			if c.inv == InvSplitBrain {
				delete(c.opt.Skip, SplitBrain)
			}
			found := firstCatch(c.seeds, *parFlag, c.opt, c.inv)
			if found == 0 {
				t.Fatalf("%s planted: no %q violation in %d seeds", c.name, c.inv, c.seeds)
			}
			plant.Set(0)
			control := 0
			for _, res := range runMany(1, int(found), *parFlag, c.opt) {
				if res.Has(c.inv) {
					control++
				}
			}
			t.Logf("%s planted: %q reported first by seed %d; without it, %d of seeds 1-%d report it",
				c.name, c.inv, found, control, found)
		})
	}
}

// firstCatch runs up to n seeds from 1, par at once, and returns the
// first seed that reported inv (0 if none did).
func firstCatch(n, par int, opt Options, inv string) uint64 {
	for first := 0; first < n; first += par {
		batch := min(par, n-first)
		for _, res := range runMany(uint64(first+1), batch, par, opt) {
			if res.Has(inv) {
				return res.Schedule.Seed
			}
		}
	}
	return 0
}
