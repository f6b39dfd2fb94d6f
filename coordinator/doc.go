// Package coordinator decides which node of a pair is Primary through an
// election in etcd, and fences a node that may no longer be it.
//
// Each node opens a session (an etcd lease kept alive by this package) and,
// while its disk is UpToDate and etcd does not record it as outdated,
// campaigns under PREFIX/NAME/election/. The node holding the election is
// the only one that may complete writes as Primary:
//
//   - Lease fencing. The holder counts its lease from the moment it sent
//     the keep-alive that etcd granted, on the monotonic clock, minus a
//     safety margin (Deadline). Past that instant its Gate holds (or fails,
//     with OnLostLease IOError) every write reply, so no write is
//     acknowledged after the lease could have expired for anyone else.
//     Past GoneAfter it demotes itself; when a renewal of the same lease
//     is granted again it promotes and resumes.
//   - Peer fencing (DRBD's fencing resource-only). A holder whose link to
//     its peer is down records "peer outdated at generation G" under
//     PREFIX/NAME/outdated before the Gate lets a write reply out that the
//     peer does not have; a node that sees a record written by another
//     node takes itself as Outdated and does not campaign. The holder
//     clears the record once the peer is Connected and UpToDate again.
//
// The decisions are pure functions (fence.go) with table tests; the
// Coordinator (coordinator.go) is the driver that talks to etcd and to the
// node (the Node interface). A daemon wires it like this:
//
//	gate := coordinator.NewGate(coordinator.Suspend, res.Mirroring)
//	c, err := coordinator.New(coordinator.Config{Endpoints: eps, Prefix: "/nbdmirror",
//		Name: "r0", ID: id, TTL: 5 * time.Second}, node, gate)
//	go c.Run(ctx)
//	// every write: gate.Submit(func() { res.WriteAsync(p, off, fua, last, gate.Wrap(done)) }, done)
package coordinator
