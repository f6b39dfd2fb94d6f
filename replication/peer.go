package replication

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// startPeer opens the replication listener and starts the dialer.
func (r *Resource) startPeer() error {
	if r.cfg.PeerListen != "" {
		listen := r.cfg.Listen
		if listen == nil {
			listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
		}
		ln, err := listen(r.cfg.PeerListen)
		if err != nil {
			return fmt.Errorf("replication: --peer-listen: %w", err)
		}
		r.wg.Add(2)
		go func() { defer r.wg.Done(); r.acceptLoop(ln) }()
		go func() { defer r.wg.Done(); <-r.stop; ln.Close() }()
	}
	if r.cfg.Peer != "" {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.dialLoop() }()
	}
	return nil
}

// stopPeer ends the link and the connection goroutines.
func (r *Resource) stopPeer() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	if l := r.currentLink(); l != nil {
		l.close()
	}
	r.wg.Wait()
}

// currentLink is the live link, or nil.
func (r *Resource) currentLink() *link {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.link
}

// Mirroring reports whether a link to the peer is up.
func (r *Resource) Mirroring() bool { return r.currentLink() != nil }

// Role is this node's role.
func (r *Resource) Role() wire.Role {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role
}

func (r *Resource) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("peer listener", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go r.meet(c, false)
	}
}

// onStop runs f if the Resource stops before release is called.
func (r *Resource) onStop(f func()) (release func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-r.stop:
			f()
		case <-done:
		}
	}()
	return func() { close(done) }
}

// dialLoop keeps a connection to cfg.Peer, retrying with backoff while
// there is none.
func (r *Resource) dialLoop() {
	backoff := 100 * time.Millisecond
	for {
		r.mu.Lock()
		changed, connected, alone := r.linkChange, r.link != nil, r.standAlone != ""
		r.mu.Unlock()
		if connected || alone {
			select {
			case <-changed:
				continue
			case <-r.stop:
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.PeerTimeout)
		release := r.onStop(cancel)
		c, err := r.dial(ctx)
		release()
		cancel()
		if err == nil && r.meet(c, true) {
			backoff = 100 * time.Millisecond
			continue
		}
		jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
		select {
		case <-time.After(backoff + jitter):
		case <-changed:
		case <-r.stop:
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// dial connects to cfg.Peer through cfg.Dial, or TCP.
func (r *Resource) dial(ctx context.Context) (net.Conn, error) {
	if r.cfg.Dial != nil {
		return r.cfg.Dial(ctx, r.cfg.Peer)
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", r.cfg.Peer)
}

// hello is what this node says of itself.
func (r *Resource) hello() wire.Hello {
	r.mu.Lock()
	defer r.mu.Unlock()
	disk, _ := parseDiskState(r.meta.Disk)
	// LastSeq is the last seq this node journaled or handed out (resync
	// records take seqs without being journaled here).
	h := wire.Hello{Resource: r.name, Size: uint64(r.size), NodeID: r.meta.NodeID, Role: r.role,
		Disk: disk, Gen: r.meta.Gen, LastSeq: max(r.journal.LastSeq(), r.seqFloor.Load())}
	if r.meta.DiscardMyData {
		h.Flags |= wire.DiscardMyData
	}
	if r.cfg.Peer != "" {
		h.Flags |= wire.Dials
	}
	if r.oos.bytes() > 0 {
		h.Flags |= wire.HasOutOfSync
	}
	return h
}

// meet runs the handshake on a new connection and, if both sides agree,
// makes it the link. It reports whether the connection became the link.
// After the handshake each side says Ready or Refuse, and only a
// connection both sides accept is attached: neither side ever acts on a
// link the other refused.
func (r *Resource) meet(c net.Conn, dialer bool) bool {
	c.SetDeadline(time.Now().Add(r.cfg.PeerTimeout))
	defer c.SetDeadline(time.Time{})
	defer r.onStop(func() { c.Close() })() // a stop does not wait for a silent peer
	hello := r.hello()
	remote, err := wire.Handshake(c, hello, r.cfg.Secret, dialer)
	if err != nil {
		c.Close()
		r.logRefusal(c, err)
		return false
	}
	if !canonical(remote, r.cfg.Peer != "", dialer, r.meta.NodeID) {
		c.Close() // both dial: the peer keeps the other connection
		return false
	}
	// Records the peer acknowledged (up to peerSeq) but no longer holds are
	// regions it lacks: a crashed Primary's peer may hold writes that
	// never reached the Primary's own journal. Every later record is
	// already in the bitmap: written apart, or pending when the link fell.
	if err := r.markRange(remote.LastSeq, r.peerSeq.Load()); err != nil {
		c.Close()
		r.log.Error("marking the records the peer lacks", "err", err)
		return false
	}
	d, reason, text := r.admitPeer(hello, remote)
	defer r.endAdmit()
	if text != "" {
		r.log.Warn("peer not connected", "addr", c.RemoteAddr().String(), "reason", text)
		c.Write(wire.AppendRefuse(nil, reason, text))
		c.Close()
		return false
	}
	if err := r.agree(c); err != nil {
		c.Close()
		r.logRefusal(c, err)
		return false
	}
	return r.attach(c, hello, remote, d)
}

// canonical says whether a connection is the one to keep: when both nodes
// dial, the one dialed by the lower node id.
func canonical(remote wire.Hello, iDial, dialer bool, self uint64) bool {
	if !iDial || remote.Flags&wire.Dials == 0 {
		return true
	}
	if dialer {
		return self < remote.NodeID
	}
	return remote.NodeID < self
}

// agree sends Ready and waits for the peer's Ready.
func (r *Resource) agree(c net.Conn) error {
	if _, err := c.Write(wire.AppendReady(nil)); err != nil {
		return err
	}
	f, err := wire.NewReader(c).Next()
	switch {
	case err != nil:
		return err
	case f.Type == wire.TypeRefuse:
		ref, _ := wire.ParseRefuse(f.Body)
		return &wire.RefusedError{Reason: ref.Reason, Text: ref.Text, ByPeer: true}
	case f.Type != wire.TypeReady:
		return fmt.Errorf("%w: %s frame instead of ready", wire.ErrUnexpectedFrame, f.Type)
	}
	return nil
}

func (r *Resource) logRefusal(c net.Conn, err error) {
	var ref *wire.RefusedError
	if errors.As(err, &ref) {
		r.log.Warn("peer refused", "addr", c.RemoteAddr().String(), "reason", ref.Reason.String(),
			"by_peer", ref.ByPeer, "err", err)
		return
	}
	r.log.Warn("peer handshake failed", "addr", c.RemoteAddr().String(), "err", err)
}

// admitPeer decides whether an authenticated peer may become the link and
// what the generation ids say. A link to the same peer node is replaced:
// the peer came back before this node noticed it was gone. Until endAdmit
// no other connection is admitted.
func (r *Resource) admitPeer(hello, remote wire.Hello) (Decision, wire.Reason, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.link
	switch {
	case r.admitting:
		return Decision{}, wire.ReasonBusy, "another connection is being set up"
	case r.standAlone != "":
		return Decision{}, wire.ReasonBusy, "StandAlone: " + r.standAlone
	case old != nil && remote.NodeID != r.peer.NodeID:
		return Decision{}, wire.ReasonBusy, "already connected to another node"
	}
	lw, rw := hello.Flags&wire.HasOutOfSync != 0, remote.Flags&wire.HasOutOfSync != 0
	local := side{primary: r.role == wire.Primary, id: r.meta.NodeID, wrote: lw,
		dirty: lw || hello.LastSeq > remote.LastSeq}
	peer := side{primary: remote.Role == wire.Primary, id: remote.NodeID, wrote: rw,
		dirty: rw || remote.LastSeq > hello.LastSeq}
	d := resolve(decide(r.meta.Gen, remote.Gen), r.meta.DiscardMyData, remote.Flags&wire.DiscardMyData != 0)
	switch {
	case d.Outcome == InSync:
		d = dirtyDirection(local, peer)
	case d.Outcome == SplitBrain && r.cfg.AfterSplitBrain == DiscardZeroChanges:
		d = discardZeroChanges(local, peer)
	}
	if text := r.refuseOutcome(d, remote); text != "" {
		return d, wire.ReasonSplitBrain, text
	}
	if r.role == wire.Primary && remote.Role == wire.Primary && !plant.On(plant.PromoteOverPrimary) {
		return d, wire.ReasonBusy, "both nodes are Primary: demote one"
	}
	r.admitting = true
	if old != nil {
		r.mu.Unlock()
		old.fail(fmt.Errorf("%w: the peer connected again", ErrLinkDown))
		r.mu.Lock()
	}
	return d, 0, ""
}

func (r *Resource) endAdmit() {
	r.mu.Lock()
	r.admitting = false
	r.mu.Unlock()
}

// attach makes c the link and starts its goroutines, unless the resource is
// stopping: then it closes c and returns false.
func (r *Resource) attach(c net.Conn, hello, remote wire.Hello, d Decision) bool {
	l := newLink(r, c, remote)
	r.order.Lock()
	if d.Outcome == SyncSource && !d.Full && r.tailCovers(hello, remote) {
		l.catchingUp, l.tailFrom = true, remote.LastSeq+1
	}
	r.mu.Lock()
	select {
	case <-r.stop: // stopPeer has begun: it looks for the link after closing stop, under r.mu
		r.mu.Unlock()
		r.order.Unlock()
		c.Close()
		return false
	default:
	}
	r.link, r.peer = l, remote
	r.seqFloor.Store(max(r.seqFloor.Load(), remote.LastSeq)) // r.order held
	r.resync = resyncState{source: d.Outcome == SyncSource, target: d.Outcome == SyncTarget, started: time.Now()}
	r.signalLinkChange()
	r.mu.Unlock()
	r.order.Unlock()
	r.log.Info("peer connected", "addr", c.RemoteAddr().String(), "peer_role", remote.Role.String(),
		"peer_disk", remote.Disk.String(), "outcome", d.Outcome.String(), "full", d.Full)
	if plant.On(plant.LeakLinkGoroutine) {
		go func() { <-l.closed; <-make(chan struct{}) }()
	}
	r.wg.Add(2)
	go func() { defer r.wg.Done(); l.sendLoop() }()
	go func() { defer r.wg.Done(); l.recvLoop() }()
	r.startSync(l, d)
	return true
}

// signalLinkChange wakes whoever waits for the link to change; r.mu held.
func (r *Resource) signalLinkChange() {
	close(r.linkChange)
	r.linkChange = make(chan struct{})
}

// linkDown is the link's last word: the connection is gone. Writes that
// still waited on the peer are marked out of sync and complete. A Primary
// that goes on alone starts a new generation first, so the peer's data is
// known to be behind.
func (r *Resource) linkDown(l *link, err error, waiting []*pending) {
	r.order.Lock()
	r.mu.Lock()
	if r.link == l {
		r.link = nil
		r.replRaw.Add(l.bytesRaw.Load())
		r.replWire.Add(l.bytesWire.Load())
		r.resync = resyncState{}
		if r.role == wire.Primary && r.meta.Gen.Bitmap == 0 {
			r.meta.newCurrent()
			if serr := saveMeta(r.cfg.MetaDir, r.meta); serr != nil {
				r.log.Error("saving the new generation", "err", serr)
			}
		}
		r.signalLinkChange()
	}
	r.mu.Unlock()
	for _, p := range waiting {
		r.oos.mark(p.off, p.length)
	}
	r.order.Unlock()
	for _, p := range waiting {
		if !plant.On(plant.ForgetWaiters) {
			p.done(false)
		}
	}
	select {
	case <-r.stop:
	default:
		r.log.Warn("peer disconnected", "err", err, "out_of_sync_bytes", r.oos.bytes())
	}
}
