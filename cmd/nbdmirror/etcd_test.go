package main

import (
	"context"
	"flag"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
	"github.com/nbdmirror/nbdmirror/internal/etcdtest"
)

var etcdRounds = flag.Int("etcd.rounds", 2, "kill -9 rounds of TestEtcdFailoverAfterKill (20 under NBDMIRROR_STRESS)")

// etcdTTL is the lease TTL of the etcd tests; a takeover must come within
// etcdTTL + 3s of the Primary's death.
const etcdTTL = 2 * time.Second

// etcdFlags are the flags of a node of an elected pair.
func etcdFlags(endpoints []string) []string {
	return []string{"--etcd", strings.Join(endpoints, ","), "--lease-ttl", etcdTTL.String(), "--etcd-prefix", "/test"}
}

// urls turns host:port addresses into http URLs.
func urls(addrs []string) []string {
	var u []string
	for _, a := range addrs {
		u = append(u, "http://"+a)
	}
	return u
}

// etcdPair starts a three-member etcd and a pair elected through it: a
// starts with --primary and so wins first. epsA/epsB, if set, are the
// endpoints each node is given (proxies, to cut one off).
func etcdPair(t testing.TB, epsA, epsB []string, extra ...string) (cl *etcdtest.Cluster, a, b *node) {
	t.Helper()
	needTools(t, "etcd")
	cl = etcdtest.Start(t, 3, freeAddr)
	if epsA == nil {
		epsA = cl.Endpoints()
	}
	if epsB == nil {
		epsB = cl.Endpoints()
	}
	a, b = newPair(t, "64M", append(etcdFlags(epsA), extra...), append(etcdFlags(epsB), extra...))
	a.start()
	b.start()
	a.waitFor("elected and connected", 20*time.Second, func(st Status) bool {
		return st.Role == "Primary" && established(st)
	})
	return cl, a, b
}

func isPrimary(st Status) bool { return st.Role == "Primary" }

// TestEtcdFailoverAfterKill: under a load of stamped writes (16 in flight,
// FUA and FLUSH mixed in) the Primary is killed with SIGKILL; the
// Secondary wins the election and promotes by itself within the lease TTL
// + 3s; every acknowledged write is there; the old Primary, restarted,
// rejoins as Secondary and resyncs. The next round kills the other node.
// At the end both images are identical.
func TestEtcdFailoverAfterKill(t *testing.T) {
	rounds := *etcdRounds
	if stress() {
		rounds = 20
	}
	_, a, b := etcdPair(t, nil, nil)
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 5})
	rng := rand.New(rand.NewPCG(13, uint64(time.Now().UnixNano())))
	primary, secondary := a, b
	for round := range rounds {
		dev := dialNode(t, primary)
		done := make(chan error, 1)
		go func() { done <- ck.Run(context.Background(), dev) }()
		time.Sleep(300*time.Millisecond + time.Duration(rng.IntN(700))*time.Millisecond)
		primary.kill()
		killed := time.Now()
		<-done
		secondary.waitFor("promoted by the election", etcdTTL+3*time.Second, isPrimary)
		took := time.Since(killed)

		rep, err := ck.Verify(dialNode(t, secondary))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: Primary after %v; %d writes acknowledged, %d blocks checked: lost %d, torn %d, foreign %d",
			round, took.Round(time.Millisecond), rep.Acked, rep.Checked, rep.Lost, rep.Torn, rep.Foreign)
		if !rep.OK() || rep.Acked == 0 {
			t.Fatalf("round %d: %s\nold primary:\n%s\nnew primary:\n%s", round, rep.FirstBad, primary.logs(), secondary.logs())
		}
		primary.start()
		secondary.waitFor("resynced", 60*time.Second, func(st Status) bool {
			return isPrimary(st) && established(st) && st.Stats.OutOfSyncBytes == 0
		})
		if st := primary.status(); st.Role != "Secondary" || st.Coordinator == nil || st.Coordinator.Holder != secondary.status().Coordinator.ID {
			t.Fatalf("round %d: the restarted node: %+v", round, st)
		}
		primary, secondary = secondary, primary
	}
	stopPair(t, secondary, primary)
}

// ackClock records when the checker's acknowledgements last moved.
type ackClock struct {
	last atomic.Int64 // unix nanoseconds of the last change seen
	stop chan struct{}
}

func watchAcks(ck *checker.Checker) *ackClock {
	c := &ackClock{stop: make(chan struct{})}
	go func() {
		seen := ck.Acked()
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if n := ck.Acked(); n != seen {
				seen = n
				c.last.Store(time.Now().UnixNano())
			}
		}
	}()
	return c
}

// logTime is the time of the first slog line of logs that contains msg.
func logTime(t *testing.T, logs, msg string) time.Time {
	t.Helper()
	re := regexp.MustCompile(`time=(\S+) .*msg="?` + regexp.QuoteMeta(msg))
	m := re.FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no log line %q in\n%s", msg, logs)
	}
	ts, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestEtcdPrimaryCutFromEtcd: the Primary loses etcd but not its peer. It
// suspends its writes before its lease can expire, so none is
// acknowledged after the Secondary wins; it demotes, the Secondary
// promotes, and every write the old Primary acknowledged is on the new
// one. When the cut heals the old Primary stays Secondary, connected.
func TestEtcdPrimaryCutFromEtcd(t *testing.T) {
	needTools(t, "etcd")
	cl := etcdtest.Start(t, 3, freeAddr)
	var proxies []*proxy
	var viaProxy []string
	for _, addr := range cl.Addrs() {
		p := startProxy(t, addr)
		proxies = append(proxies, p)
		viaProxy = append(viaProxy, p.addr())
	}
	a, b := newPair(t, "64M", append(etcdFlags(urls(viaProxy)), "--primary"), etcdFlags(cl.Endpoints()))
	a.start()
	b.start()
	a.waitFor("elected and connected", 20*time.Second, func(st Status) bool { return isPrimary(st) && established(st) })

	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 9})
	acks := watchAcks(ck)
	defer close(acks.stop)
	dev := dialNode(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ck.Run(ctx, dev) }()
	time.Sleep(500 * time.Millisecond)
	for _, p := range proxies {
		p.blackhole(true)
	}
	b.waitFor("promoted by the election", etcdTTL+3*time.Second, isPrimary)
	won := logTime(t, b.logs(), "won the election")
	lastAck := time.Unix(0, acks.last.Load())
	t.Logf("last write acknowledged by the cut Primary %v before the other node won", won.Sub(lastAck).Round(time.Millisecond))
	if !lastAck.Before(won) {
		t.Fatalf("the cut Primary acknowledged a write %v after the other node won\n%s", lastAck.Sub(won), a.logs())
	}
	if st := a.status(); st.Role != "Secondary" || !strings.Contains(a.logs(), "writes suspended") {
		t.Fatalf("the cut Primary: role %s\n%s", st.Role, a.logs())
	}
	for _, p := range proxies {
		p.blackhole(false)
	}
	// Its held writes fail once it learns of the new holder.
	a.waitFor("sees the new holder", 10*time.Second, func(st Status) bool {
		return st.Role == "Secondary" && st.Coordinator.Etcd == "ok" && st.Coordinator.Holder == b.status().Coordinator.ID
	})
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the checker's held writes did not fail on the deposed node")
	}

	rep, err := ck.Verify(dialNode(t, b))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged, %d blocks checked: lost %d, torn %d, foreign %d", rep.Acked, rep.Checked, rep.Lost, rep.Torn, rep.Foreign)
	if !rep.OK() || rep.Acked == 0 {
		t.Fatalf("%s\nold primary:\n%s\nnew primary:\n%s", rep.FirstBad, a.logs(), b.logs())
	}
	b.waitFor("old Primary back as Secondary", 20*time.Second, func(st Status) bool {
		return isPrimary(st) && established(st) && st.Coordinator.Holder == st.Coordinator.ID
	})
	stopPair(t, b, a)
}
