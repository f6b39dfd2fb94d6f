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

// acceptLoop meets each connection to the listener. Those still in their
// handshake are bounded in number (see unauthSlots).
func (r *Resource) acceptLoop(ln net.Listener) {
	slots := newUnauthSlots(r.maxHandshakes())
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("peer listener", "err", err)
			time.Sleep(tune.acceptRetry)
			continue
		}
		release, ok := slots.take()
		if !ok {
			c.Close()
			slots.logFull(r.log, c)
			continue
		}
		go r.meetAccepted(c, release)
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
	backoff := tune.dialMin
	for {
		r.mu.Lock()
		changed, connected, alone := r.linkChange, r.link != nil, r.standAlone != ""
		wait := time.Until(r.flapUntil)
		r.mu.Unlock()
		if connected || alone {
			select {
			case <-changed:
				continue
			case <-r.stop:
				return
			}
		}
		if wait > 0 { // the last link failed soon after it came up
			select {
			case <-time.After(wait):
			case <-r.stop:
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.PeerTimeout)
		release := r.onStop(cancel)
		c, err := r.dial(ctx)
		release()
		cancel()
		if err == nil {
			err = r.meet(c, true)
		}
		if err == nil {
			backoff = tune.dialMin
			continue
		}
		jitter := time.Duration(rand.Int64N(int64(backoff) / 2))
		select {
		case <-time.After(backoff + jitter):
		case <-changed:
		case <-r.stop:
			return
		}
		backoff = nextDialBackoff(backoff, err)
	}
}

// dial connects to cfg.Peer through cfg.Dial, or TCP, and starts TLS on
// the connection if the link runs over TLS.
func (r *Resource) dial(ctx context.Context) (net.Conn, error) {
	var c net.Conn
	var err error
	if r.cfg.Dial != nil {
		c, err = r.cfg.Dial(ctx, r.cfg.Peer)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", r.cfg.Peer)
	}
	if err != nil {
		return nil, err
	}
	return r.secureConn(c, true)
}

// hello is what this node says of itself, and State.Connects as it says it.
func (r *Resource) hello() (wire.Hello, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	disk, _ := parseDiskState(r.meta.Disk)
	// LastSeq is the last seq this node journaled or handed out (resync
	// records take seqs without being journaled here).
	h := wire.Hello{Resource: r.name, Size: uint64(r.size), NodeID: r.meta.NodeID, Role: r.role,
		Disk: disk, Gen: r.meta.Gen, LastSeq: max(r.journal.LastSeq(), r.seqFloor.Load()),
		LostFrom: r.meta.LostFrom, Flags: wire.ServesReads}
	if r.meta.DiscardMyData {
		h.Flags |= wire.DiscardMyData
	}
	if r.cfg.Peer != "" && r.standAlone == "" {
		h.Flags |= wire.Dials // a StandAlone node does not dial: the peer keeps a connection it makes
	}
	if r.oos.bytes() > 0 {
		h.Flags |= wire.HasOutOfSync
	}
	return h, r.connects
}

// meet runs the handshake on a new connection and, if both sides agree,
// makes it the link. It returns nil if the connection became the link,
// else why not (errNotKept when this node closed it).
// After the handshake each side says Ready or Refuse, and only a
// connection both sides accept is attached: neither side ever acts on a
// link the other refused.
func (r *Resource) meet(c net.Conn, dialer bool) error {
	c.SetDeadline(time.Now().Add(r.cfg.PeerTimeout))
	defer c.SetDeadline(time.Time{})
	defer r.onStop(func() { c.Close() })() // a stop does not wait for a silent peer
	hello, since := r.hello()
	remote, err := wire.Handshake(c, hello, r.cfg.Secret, dialer)
	if err != nil {
		c.Close()
		r.logRefusal(c, err)
		r.refusedByPeer(err, since)
		return err
	}
	d, ok := r.admitPeer(c, hello, remote, dialer, since)
	if !ok {
		return errNotKept
	}
	defer r.endAdmit()
	// Records the peer acknowledged (up to peerSeq) but no longer holds are
	// regions it lacks: a crashed Primary's peer may hold writes that
	// never reached the Primary's own journal, and may have given their
	// seqs to new writes since (sameUpTo). Every later record is already
	// in the bitmap: written apart, or pending when the link fell.
	if err := r.markRange(r.journal, sameUpTo(remote), r.peerSeq.Load()); err != nil {
		c.Close()
		r.log.Error("marking the records the peer lacks", "err", err)
		return err
	}
	if err := r.agree(c); err != nil {
		c.Close()
		r.logRefusal(c, err)
		r.refusedByPeer(err, since)
		return err
	}
	if !r.attach(c, hello, remote, d, since) {
		return errNotKept
	}
	return nil
}

// errNotKept: this node closed a connection without making it the link
// (the peer keeps another one, this node refused it, or it is stopping).
var errNotKept = errors.New("replication: connection not kept")

// agree sends Ready and waits for the peer's Ready. A peer that refused
// may have closed the connection already, failing the write: its Refuse
// is read all the same, so that this node learns why.
func (r *Resource) agree(c net.Conn) error {
	_, werr := c.Write(wire.AppendReady(nil))
	f, err := wire.NewReader(c).Next()
	switch {
	case err != nil && werr != nil:
		return werr
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

// admitPeer asks the decision core whether an authenticated peer may
// become the link and acts on its answer: it closes a connection the peer
// does not keep, tells a refused peer why, or fails the link the peer
// replaces. Until endAdmit no other connection is admitted.
func (r *Resource) admitPeer(c net.Conn, hello, remote wire.Hello, dialer bool, since uint64) (Decision, bool) {
	r.mu.Lock()
	acts, _ := r.stepLocked(PeerHello{Local: hello, Remote: remote, Dialer: dialer, // saves nothing
		BackingOff: time.Now().Before(r.flapUntil), Since: since, PeerSeq: r.peerSeq.Load()})
	old := r.link
	r.mu.Unlock()
	for _, a := range acts {
		switch a := a.(type) {
		case Drop: // both dial: the peer keeps the other connection
			c.Close()
			return Decision{}, false
		case Refuse:
			r.log.Warn("peer not connected", "addr", c.RemoteAddr().String(), "reason", a.Text,
				"local_gen", fmt.Sprintf("%+v", hello.Gen), "peer_gen", fmt.Sprintf("%+v", remote.Gen))
			c.Write(wire.AppendRefuse(nil, a.Reason, a.Text))
			if _, ok := has[AwaitVerdict](acts); ok {
				r.awaitVerdict(c, a, since)
			} else {
				// The peer's word (its Ready or Refuse), read before the
				// close: closing with it unread would reset the connection,
				// and the reset can discard the refusal before the peer
				// reads it. The handshake's deadline bounds the wait.
				wire.NewReader(c).Next()
			}
			c.Close()
			return Decision{}, false
		case FailLink:
			if old != nil {
				old.fail(fmt.Errorf("%w: the peer connected again", ErrLinkDown))
			}
		case Admit:
			return a.Decision, true
		}
	}
	c.Close()
	return Decision{}, false
}

func (r *Resource) endAdmit() {
	r.mu.Lock()
	r.admitting = false
	r.mu.Unlock()
}

// attach makes c the link and starts its goroutines, unless the resource is
// stopping: then it closes c and returns false. since is State.Connects when
// this node said hello.
func (r *Resource) attach(c net.Conn, hello, remote wire.Hello, d Decision, since uint64) bool {
	l := newLink(r, c, remote)
	l.since = since
	r.order.Lock()
	oldest, last := r.journal.OldestRetainedSeq(), r.journal.LastSeq()
	r.mu.Lock()
	select {
	case <-r.stop: // stopPeer has begun: it looks for the link after closing stop, under r.mu
		r.mu.Unlock()
		r.order.Unlock()
		c.Close()
		return false
	default:
	}
	r.resync = resyncState{started: time.Now()}
	oldest = max(oldest, r.meta.TailFrom) // see meta.TailFrom
	acts, _ := r.stepLocked(Attach{Local: hello, Remote: remote, Decision: d, OldestSeq: oldest, LastSeq: last,
		LastExtentSeq: r.journal.LastExtentSeq()})
	if _, ok := has[Drop](acts); ok {
		r.mu.Unlock()
		r.order.Unlock()
		c.Close()
		r.log.Warn("peer not connected", "addr", c.RemoteAddr().String(),
			"reason", "this node changed while the connection was set up")
		return false
	}
	if s, ok := has[StartSync](acts); ok && s.Mode == wire.SyncTail {
		l.catchingUp, l.tailFrom = true, sameUpTo(remote)+1
		r.resync.inPlace = s.InPlace
	}
	l.fromSeq = last
	r.link = l
	r.aloneSinceOpen.Store(false)                                // met the peer: a link lost from here on says the rest
	followedNow := r.role == wire.Primary && r.health.peerOnly() // the peer followed at its attach (attached)
	r.seqFloor.Store(max(r.seqFloor.Load(), remote.LastSeq))     // r.order held
	r.signalLinkChange()
	r.mu.Unlock()
	r.order.Unlock()
	if followedNow {
		r.health.follow.set(followed) // replies held run here, not under the locks
	}
	r.log.Info("peer connected", "addr", c.RemoteAddr().String(), "peer_role", remote.Role.String(),
		"peer_disk", remote.Disk.String(), "outcome", d.Outcome.String(), "full", d.Full)
	if plant.On(plant.LeakLinkGoroutine) {
		go func() { <-l.closed; <-make(chan struct{}) }()
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); l.run() }()
	r.startSync(l, d)
	return true
}

// signalLinkChange wakes whoever waits for the link to change; r.mu held.
func (r *Resource) signalLinkChange() {
	close(r.linkChange)
	r.linkChange = make(chan struct{})
}

// linkDown is the link's last word, from its owner once the connection
// is closed: writes that still waited on the peer complete as lost, which
// marks their regions out of sync. A Primary that goes on alone starts a
// new generation first, so the peer's data is known to be behind.
func (r *Resource) linkDown(l *link, err error, waiting []*pending) {
	r.order.Lock()
	r.mu.Lock()
	// The regions of what still waited on the peer are marked before the
	// next link can attach (their completions below mark them again): a
	// mark that came after it would be missed by its resync, or by the
	// "in sync" that needs none. Not on a disk that is out: none of them
	// succeeds but through the peer (replyOf), and a mark would say the
	// disk holds a write its peer lacks (disklessOutcome).
	out := r.health.out()
	for _, p := range waiting {
		if p.length > 0 && !out && !plant.On(plant.ForgetWaiters) {
			r.oos.mark(p.off, p.length)
		}
	}
	if r.link == l {
		r.link = nil
		if err != errDisconnected && err != errPeerDisconnected {
			r.flapDelay = nextFlapDelay(r.flapDelay, time.Since(l.start), l.settled.Load())
			r.flapUntil = time.Now().Add(r.flapDelay)
		}
		r.replRaw.Add(l.bytesRaw.Load())
		r.replWire.Add(l.bytesWire.Load())
		// The core sees the resync that ran on the link (a source goes on
		// in a new generation), then it is forgotten.
		if _, serr := r.stepLocked(LinkLost{NewID: randomID()}); serr != nil {
			r.log.Error("saving the new generation", "err", serr)
		}
		r.resync = resyncState{}
	}
	r.mu.Unlock()
	r.order.Unlock()
	for _, p := range waiting {
		if !plant.On(plant.ForgetWaiters) {
			p.done(false, 0)
		}
	}
	if done := l.takeFollow(); done != nil {
		done(false)
	}
	select {
	case <-r.stop:
	default:
		r.log.Warn("peer disconnected", "err", err, "out_of_sync_bytes", r.oos.bytes())
		r.refusedByPeer(err, l.since) // the peer refused on the link: a split brain it found
	}
}
