package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/checker"
	"github.com/nbdmirror/nbdmirror/internal/etcdtest"
)

// cuttablePair is an elected pair whose link runs through two proxies
// (each node dials the other through one), so the test can cut it.
func cuttablePair(t *testing.T, cl *etcdtest.Cluster) (a, b *node, link []*proxy) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(pairSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	la, lb := freeAddr(t), freeAddr(t)
	toA, toB := startProxy(t, la), startProxy(t, lb)
	a = newNode(t, "64M", "--primary").withPeer(la, toB.addr(), secret, etcdFlags(cl.Endpoints())...)
	b = newNode(t, "64M", "--secondary").withPeer(lb, toA.addr(), secret, etcdFlags(cl.Endpoints())...)
	a.start()
	b.start()
	a.waitFor("elected and connected", 20*time.Second, func(st Status) bool { return isPrimary(st) && established(st) })
	return a, b, []*proxy{toA, toB}
}

// stays fails the test if cond holds at any status taken during d.
func (n *node) stays(what string, d time.Duration, cond func(Status) bool) {
	n.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if st := n.status(); cond(st) {
			n.t.Fatalf("%s: %+v\n%s", what, st, n.logs())
		}
	}
}

// TestEtcdLinkCutOutdatesThePeer: with the link cut and both nodes still
// reaching etcd, the Primary records its peer outdated and goes on
// writing; the Secondary shows Outdated and does not campaign, even once
// the Primary is killed; the Primary, restarted, is elected again, and
// after the link heals and the resync ends the record is cleared.
func TestEtcdLinkCutOutdatesThePeer(t *testing.T) {
	needTools(t, "etcd")
	cl := etcdtest.Start(t, 3, freeAddr)
	a, b, link := cuttablePair(t, cl)
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 21})
	dev := dialNode(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ck.Run(ctx, dev) }()

	for _, p := range link {
		p.blackhole(true)
	}
	a.waitFor("peer recorded outdated", 10*time.Second, func(st Status) bool {
		return st.Coordinator.PeerOutdated && st.Peer.Connection != "Connected"
	})
	fenced := ck.Acked()
	b.waitFor("Outdated", 5*time.Second, func(st Status) bool { return st.Disk == "Outdated" && st.Coordinator.Outdated })
	a.waitFor("writes go on alone", 10*time.Second, func(Status) bool { return ck.Acked() > fenced+100 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("checker on the Primary: %v", err)
	}

	a.kill()
	b.stays("an outdated node promoted", etcdTTL+3*time.Second, isPrimary)

	a.start()
	a.waitFor("elected again", 10*time.Second, isPrimary)
	for _, p := range link {
		p.blackhole(false)
	}
	a.waitFor("resynced, record cleared", 30*time.Second, func(st Status) bool {
		return established(st) && st.Stats.OutOfSyncBytes == 0 && !st.Coordinator.PeerOutdated
	})
	b.waitFor("no longer Outdated", 5*time.Second, func(st Status) bool { return st.Disk == "UpToDate" && !st.Coordinator.Outdated })
	rep, err := ck.Verify(dialNode(t, a))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Acked == 0 {
		t.Fatalf("%s\n%s", rep.FirstBad, a.logs())
	}
	stopPair(t, a, b)
}

// TestEtcdQuorumLossSuspends: with two of the three etcd members stopped
// no node promotes, and the Primary suspends its writes; once etcd is
// back the same Primary resumes, the held writes complete, and nothing
// acknowledged is lost.
func TestEtcdQuorumLossSuspends(t *testing.T) {
	cl, a, b := etcdPair(t, nil, nil)
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 33})
	dev := dialNode(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ck.Run(ctx, dev) }()
	a.waitFor("writes flow", 10*time.Second, func(Status) bool { return ck.Acked() > 100 })

	cl.Stop(1)
	cl.Stop(2)
	a.waitFor("suspended", 2*etcdTTL, func(st Status) bool { return st.Coordinator.Suspended })
	held := ck.Acked()
	b.stays("promoted without quorum", etcdTTL+2*time.Second, isPrimary)
	if n := ck.Acked(); n != held {
		t.Fatalf("%d writes acknowledged while suspended\n%s", n-held, a.logs())
	}

	cl.Restart(1)
	cl.Restart(2)
	a.waitFor("resumed", 20*time.Second, func(st Status) bool {
		return isPrimary(st) && !st.Coordinator.Suspended && ck.Acked() > held+100
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("the checker saw an error through the suspension: %v", err)
	}
	rep, err := ck.Verify(dialNode(t, a))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged, %d across the suspension", rep.Acked, rep.Acked-held)
	if !rep.OK() {
		t.Fatalf("%s\n%s", rep.FirstBad, a.logs())
	}
	if st := a.status(); st.Coordinator.Holder != st.Coordinator.ID {
		t.Fatalf("another holder after the quorum came back: %+v", st.Coordinator)
	}
	stopPair(t, a, b)
}

// TestEtcdQuorumLossIOError is TestEtcdQuorumLossSuspends with
// --on-lost-lease io-error: the Primary's writes fail instead of waiting,
// nobody promotes, and once etcd is back the same Primary takes writes
// again with nothing acknowledged lost. Under NBDMIRROR_STRESS only.
func TestEtcdQuorumLossIOError(t *testing.T) {
	if !stress() {
		t.Skip("NBDMIRROR_STRESS=1 (make stress) runs it")
	}
	cl, a, b := etcdPair(t, nil, nil, "--on-lost-lease", "io-error")
	ck := checker.New(checker.Options{Blocks: 8192, InFlight: 16, FUAEvery: 5, FlushEvery: 50, Seed: 35})
	dev := dialNode(t, a)
	done := make(chan error, 1)
	go func() { done <- ck.Run(context.Background(), dev) }()
	a.waitFor("writes flow", 10*time.Second, func(Status) bool { return ck.Acked() > 100 })
	cl.Stop(1)
	cl.Stop(2)
	select {
	case err := <-done:
		t.Logf("the checker stopped on: %v", err)
	case <-time.After(2 * etcdTTL):
		t.Fatalf("writes went on for %v without quorum\n%s", 2*etcdTTL, a.logs())
	}
	b.stays("promoted without quorum", etcdTTL+2*time.Second, isPrimary)
	cl.Restart(1)
	cl.Restart(2)
	a.waitFor("resumed", 20*time.Second, func(st Status) bool { return isPrimary(st) && !st.Coordinator.Suspended })
	dev = dialNode(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := ck.Run(ctx, dev); err != nil {
		t.Fatalf("writes after etcd came back: %v", err)
	}
	rep, err := ck.Verify(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("%s\n%s", rep.FirstBad, a.logs())
	}
	stopPair(t, a, b)
}
