package replication

import (
	"errors"
	"fmt"
	"net"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// coreState is the part of the node the decision core sees; r.mu held.
func (r *Resource) coreState() State {
	disk, _ := parseDiskState(r.meta.Disk)
	if r.health.out() {
		disk = wire.Diskless // failed: refused as the peer of a Primary from the first fault on
	}
	return State{NodeID: r.meta.NodeID, Role: r.role, Disk: disk, Gen: r.meta.Gen,
		DiscardMyData: r.meta.DiscardMyData, LostFrom: r.meta.LostFrom, StandAlone: r.standAlone, Refusal: r.refusal,
		AfterSplitBrain: r.cfg.AfterSplitBrain, Admitting: r.admitting, Linked: r.link != nil, Asking: r.asking, Connects: r.connects,
		Peer: r.peer, Source: r.resync.source, Target: r.resync.target, DoneSent: r.meta.DoneSent}
}

// setCoreState takes the core's new state; r.mu held. The link itself is
// the caller's to set or clear (State.Linked follows it).
func (r *Resource) setCoreState(s State) {
	if old, _ := parseDiskState(r.meta.Disk); s.Disk != old {
		r.meta.Disk = s.Disk.String()
	}
	r.role, r.meta.Gen, r.meta.DiscardMyData, r.meta.LostFrom = s.Role, s.Gen, s.DiscardMyData, s.LostFrom
	r.standAlone, r.refusal, r.admitting, r.asking = s.StandAlone, s.Refusal, s.Admitting, s.Asking
	r.connects = s.Connects
	r.peer, r.resync.source, r.resync.target, r.meta.DoneSent = s.Peer, s.Source, s.Target, s.DoneSent
	r.oos.watch.Store(s.Linked && !s.Source && !s.Target && s.Role == wire.Primary)
	r.setDiskDirect(s.Target)
}

// stepLocked feeds ev to the decision core, takes its new state and
// performs the actions that only touch this node's own state: saving meta,
// waking the dialer, dropping marks, moving seqs on (r.order held for
// that), logging. It returns every action, in order, for the caller to
// perform the others, and the first error of saving meta. r.mu held.
func (r *Resource) stepLocked(ev Event) ([]Action, error) {
	s, acts := step(r.coreState(), ev)
	r.setCoreState(s)
	var err error
	for _, a := range acts {
		switch a := a.(type) {
		case SaveMeta:
			if serr := r.saveMeta(); serr != nil && err == nil {
				err = serr
			}
		case Wake:
			r.signalLinkChange()
		case ClearMarks:
			r.oos.reset()
		case MarkAll:
			r.oos.mark(0, r.size)
		case SkipSeqs:
			r.seqFloor.Store(max(r.seqFloor.Load(), r.journal.LastSeq()) + seqGap)
		case NewGeneration:
			r.log.Info("new generation", "gen", fmt.Sprintf("%+v", r.meta.Gen))
		case GoStandAlone:
			r.log.Error("StandAlone", "why", a.Text, "reason", a.Reason.String(),
				"local_gen", fmt.Sprintf("%+v", r.meta.Gen))
		}
	}
	return acts, err
}

// refusedByPeer hands a refusal the peer sent (in the handshake, in the
// agreement or on the link) to the core: a split brain or unrelated data
// makes this node StandAlone too. since is State.Connects when this node
// said its Hello on the connection.
func (r *Resource) refusedByPeer(err error, since uint64) {
	var ref *wire.RefusedError
	if !errors.As(err, &ref) || !ref.ByPeer {
		return
	}
	r.mu.Lock()
	r.stepLocked(RefusedByPeer{Reason: ref.Reason, Text: ref.Text, Since: since}) // saves nothing
	r.mu.Unlock()
}

// has reports whether acts holds an action of type A.
func has[A Action](acts []Action) (A, bool) {
	for _, a := range acts {
		if a, ok := a.(A); ok {
			return a, true
		}
	}
	var zero A
	return zero, false
}

// awaitVerdict reads the peer's word on a connection this node refused
// (its Ready, or its own Refuse) and hands it to the core, which says
// whether this node goes StandAlone.
func (r *Resource) awaitVerdict(c net.Conn, mine Refuse, since uint64) {
	v := PeerVerdict{Mine: mine, Since: since}
	f, err := wire.NewReader(c).Next()
	switch {
	case err != nil:
		v.Lost = true
	case f.Type == wire.TypeRefuse:
		ref, _ := wire.ParseRefuse(f.Body)
		v.Reason, v.Text = ref.Reason, ref.Text
	default:
		v.Ready = f.Type == wire.TypeReady
		v.Lost = !v.Ready
	}
	r.mu.Lock()
	r.stepLocked(v) // saves nothing
	r.mu.Unlock()
}
