package main

import (
	"context"
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

var crashRounds = flag.Int("crash.rounds", 3, "SIGKILL-and-restart rounds of TestCrashKeepsAcknowledgedWrites")

// nbdDial connects an NBD client to the export r0 at addr.
func nbdDial(ctx context.Context, addr string) (*nbdclient.Client, error) {
	return nbdclient.Dial(ctx, addr, "r0")
}

// dialNode connects an NBD client to the node's export.
func dialNode(t testing.TB, n *node) checker.NBD {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, n.nbd, "r0")
	if err != nil {
		t.Fatalf("dial %s: %v\n%s", n.nbd, err, n.logs())
	}
	t.Cleanup(func() { c.Close() })
	return checker.NBD{Client: c}
}

// TestCrashKeepsAcknowledgedWrites kills the daemon at a random moment under
// a load of stamped writes with FUA and FLUSH mixed in, restarts it on the
// same disk and journal, and reads every block back: each holds its last
// acknowledged write or a newer one, none is torn.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	n := newNode(t, "64M", "--primary")
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 32, FUAEvery: 7, FlushEvery: 64, Seed: 42})
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	for round := range *crashRounds {
		n.start()
		dev := dialNode(t, n)
		done := make(chan error, 1)
		go func() { done <- ck.Run(context.Background(), dev) }()
		time.Sleep(200*time.Millisecond + time.Duration(rng.IntN(800))*time.Millisecond)
		n.kill()
		if err := <-done; err == nil {
			t.Fatal("the checker did not notice the crash")
		}
		n.start()
		rep, err := ck.Verify(dialNode(t, n))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d writes acknowledged, %d blocks written", round, rep.Acked, rep.Written)
		if !rep.OK() || rep.Acked == 0 {
			t.Fatalf("round %d: %+v\n%s", round, rep, n.logs())
		}
		n.kill()
	}
}
