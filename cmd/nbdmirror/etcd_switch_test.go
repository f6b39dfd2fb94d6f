package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// TestEtcdSwitchover: `role primary` on the node that does not hold the
// election is refused, naming the holder; `role secondary` on the holder
// under load hands the election over: the peer promotes, the old
// Primary's NBD I/O is refused, and no acknowledged write is lost.
func TestEtcdSwitchover(t *testing.T) {
	_, a, b := etcdPair(t, nil, nil)
	holder := a.status().Coordinator.ID
	if out := ctlErr(t, b, "role", "primary"); !strings.Contains(out, holder+" holds the election") {
		t.Fatalf("promotion of the node that does not hold the election: %s", out)
	}
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 41})
	dev := dialNode(t, a)
	done := make(chan error, 1)
	go func() { done <- ck.Run(context.Background(), dev) }()
	a.waitFor("writes flow", 10*time.Second, func(Status) bool { return ck.Acked() > 100 })

	ctl(t, a, "role", "secondary")
	b.waitFor("promoted", etcdTTL+3*time.Second, isPrimary)
	if err := <-done; err == nil {
		t.Fatal("the old Primary's client went on writing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := nbdclient.Dial(ctx, a.nbd, "r0"); err == nil {
		c.Close()
		t.Fatal("the old Primary accepted an NBD client")
	} else if !strings.Contains(err.Error(), "Secondary") {
		t.Logf("refused with: %v", err)
	}
	rep, err := ck.Verify(dialNode(t, b))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged: lost %d, torn %d, foreign %d", rep.Acked, rep.Lost, rep.Torn, rep.Foreign)
	if !rep.OK() {
		t.Fatalf("%s\n%s\n%s", rep.FirstBad, a.logs(), b.logs())
	}
	b.waitFor("the old Primary rejoined", 10*time.Second, func(st Status) bool {
		return established(st) && st.Coordinator.Holder == st.Coordinator.ID
	})
	stopPair(t, b, a)
}

// BenchmarkSwitchover measures the pause a client sees across `role
// secondary` on the elected Primary: from the last write the old Primary
// acknowledged to the first the new one acknowledged, for a writer (4 KiB
// FUA writes, one at a time) that redials the other node as soon as a
// write fails. Each iteration switches over once, alternating nodes.
//
//	go test -run '^$' -bench Switchover -benchtime 5x ./cmd/nbdmirror
func BenchmarkSwitchover(b *testing.B) {
	_, x, y := etcdPair(b, nil, nil)
	primary, secondary := x, y
	var total, worst time.Duration
	for b.Loop() {
		pause := switchOnce(b, primary, secondary)
		total += pause
		worst = max(worst, pause)
		secondary.waitFor("the old Primary rejoined", 20*time.Second, func(st Status) bool {
			return isPrimary(st) && established(st)
		})
		primary, secondary = secondary, primary
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-pause/op")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst-pause")
	b.StopTimer()
	x.stop()
	y.stop()
}

// switchOnce runs the writer on from, switches over to to, and returns the
// pause the writer saw.
func switchOnce(b *testing.B, from, to *node) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, from.nbd, "r0")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	result := make(chan time.Duration, 1)
	go func() {
		var last time.Time
		for i := 0; ; i++ {
			if _, err := c.WriteAt(buf, int64(i%4096)*4096, nbdclient.FlagFUA); err != nil {
				break
			}
			last = time.Now()
		}
		c.Close()
		for ctx.Err() == nil {
			n, err := nbdclient.Dial(ctx, to.nbd, "r0")
			if err == nil {
				_, err = n.WriteAt(buf, 0, nbdclient.FlagFUA)
				n.Close()
				if err == nil {
					result <- time.Since(last)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		result <- 0
	}()
	time.Sleep(300 * time.Millisecond)
	if out, err := exec.Command(binary, "role", "secondary", "--control", from.control).CombinedOutput(); err != nil {
		b.Fatalf("role secondary: %v\n%s", err, out)
	}
	pause := <-result
	if pause == 0 {
		b.Fatalf("the writer never reached the new Primary\n%s", to.logs())
	}
	return pause
}
