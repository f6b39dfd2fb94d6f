package main

import (
	"context"
	"flag"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
)

var failoverRounds = flag.Int("failover.rounds", 4, "rounds of TestFailoverLosesNoAcknowledgedWrite")

// restartAs sets the role flag the node starts with next time.
func (n *node) restartAs(role string) {
	for i, a := range n.args {
		if a == "--primary" || a == "--secondary" {
			n.args[i] = role
		}
	}
}

// TestFailoverLosesNoAcknowledgedWrite: under a load of stamped writes with
// FUA and FLUSH mixed in, the Primary is killed at a random moment, the
// Secondary is promoted, and every write the old Primary acknowledged is
// read back from the new one. The old Primary comes back as Secondary and
// resyncs; the next round fails over the other way. At the end both images
// are identical.
func TestFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	a, b := connectedPair(t, "64M")
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 32, FUAEvery: 5, FlushEvery: 50, Seed: 3})
	failovers(t, a, b, ck, *failoverRounds)
	stopPair(t, a, b)
}

// TestFailoverLargeWritesInPlace is TestFailoverLosesNoAcknowledgedWrite
// with one write in four of 256 KiB, which both nodes write in place
// (--journal-data-max 256K, the default), among 4 KiB ones over the same
// blocks: the killed Primary's torn writes in place are resynced, and no
// acknowledged write is lost or comes back older.
func TestFailoverLargeWritesInPlace(t *testing.T) {
	a, b := connectedPair(t, "64M")
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 5,
		LargeEvery: 4, LargeBlocks: 64})
	failovers(t, a, b, ck, 3)
	replayed := regexp.MustCompile(`msg="journal: replayed".* extents=[1-9]`)
	if !replayed.MatchString(a.logs()) && !replayed.MatchString(b.logs()) {
		t.Error("no killed Primary found a write in place in its journal at restart: the test missed them")
	}
	stopPair(t, a, b)
}

// failovers runs rounds of: stamped writes on the Primary, a kill -9 at a
// random moment, the Secondary promoted and checked, the old Primary back
// as Secondary and resynced; each round the other way.
func failovers(t *testing.T, a, b *node, ck *checker.Checker, rounds int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(time.Now().UnixNano())))
	primary, secondary := a, b
	for round := range rounds {
		dev := dialNode(t, primary)
		done := make(chan error, 1)
		go func() { done <- ck.Run(context.Background(), dev) }()
		time.Sleep(300*time.Millisecond + time.Duration(rng.IntN(700))*time.Millisecond)
		primary.kill()
		<-done

		promoteAfterKill(t, secondary)
		rep, err := ck.Verify(dialNode(t, secondary))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d writes acknowledged, %d blocks checked: lost %d, torn %d, foreign %d",
			round, rep.Acked, rep.Checked, rep.Lost, rep.Torn, rep.Foreign)
		if !rep.OK() {
			t.Fatalf("round %d: %s\nold primary:\n%s\nnew primary:\n%s", round, rep.FirstBad, primary.logs(), secondary.logs())
		}

		primary.restartAs("--secondary")
		primary.start()
		secondary.waitFor("resynced", 60*time.Second, func(st Status) bool {
			return established(st) && st.Stats.OutOfSyncBytes == 0
		})
		primary, secondary = secondary, primary
	}
}
