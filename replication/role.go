package replication

import (
	"fmt"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// askPrimary asks a connected peer whether this node may become Primary,
// as DRBD changes a role cluster-wide in two phases: the peer says no when
// it is Primary or about to be, and otherwise counts this node Primary
// before the link brings its new role. Without a link there is nobody to
// ask; a link that goes down before the answer leaves the promotion to be
// decided as one made alone, unless another link comes up meanwhile: the
// peer on it is asked in turn, until --peer-timeout. asked says whether a
// peer said yes (it counts this node Primary now).
func (r *Resource) askPrimary(force bool) (asked bool, err error) {
	deadline := time.Now().Add(r.cfg.PeerTimeout)
	for {
		l, err := r.startAsking(force)
		if l == nil || err != nil {
			return false, err
		}
		yes, done, err := r.awaitAnswer(l, time.Until(deadline))
		if done || err != nil {
			return yes, err
		}
	}
}

// startAsking sends the link's peer a RolePrimary, unless there is no link,
// this node is Primary already, or the core refuses the promotion anyway.
func (r *Resource) startAsking(force bool) (*link, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, s := r.link, r.coreState()
	if l == nil || s.Role == wire.Primary || plant.On(plant.PromoteOverPrimary) {
		return nil, nil
	}
	if _, acts := step(s, Promote{Force: force, NewID: 1}); len(acts) > 0 {
		if d, ok := has[Deny](acts); ok {
			return nil, fmt.Errorf("%w: %s", ErrRefused, d.Text)
		}
	}
	r.stepLocked(AskingPrimary{On: true}) // saves nothing
	select {
	case <-l.roleAnswer: // an answer to an earlier question that gave up
	default:
	}
	l.queue(wire.AppendRolePrimary(nil))
	return l, nil
}

// awaitAnswer waits at most wait for the answer to startAsking's question
// on l. done is false when l went down first.
func (r *Resource) awaitAnswer(l *link, wait time.Duration) (yes, done bool, err error) {
	defer func() {
		r.mu.Lock()
		r.stepLocked(AskingPrimary{}) // saves nothing
		r.mu.Unlock()
	}()
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	select {
	case a := <-l.roleAnswer:
		if !a.Yes {
			return false, true, fmt.Errorf("%w: %s", ErrRefused, a.Text)
		}
		return true, true, nil
	case <-l.closed:
		<-l.gone // then the link is no longer the current one
		return false, false, nil
	case <-t.C:
		// A yes may still come, after which the peer counts this node
		// Primary: the link is made again, and the Hellos set it right.
		l.close()
		return false, true, fmt.Errorf("%w: the peer did not answer whether this node may become Primary within %v",
			ErrRefused, r.cfg.PeerTimeout)
	}
}

// retract undoes a peer's yes to a promotion that did not happen: the link
// is made again, and the peer learns this node's role from its Hello.
func (r *Resource) retract(asked bool) {
	if !asked {
		return
	}
	if l := r.currentLink(); l != nil {
		l.close()
	}
}

// peerAsksPrimary answers the peer's RolePrimary on l.
func (r *Resource) peerAsksPrimary(l *link) {
	r.mu.Lock()
	var acts []Action
	if r.link == l {
		acts, _ = r.stepLocked(PeerAsksPrimary{}) // saves nothing
	}
	r.mu.Unlock()
	if a, ok := has[Answer](acts); ok {
		l.queue(wire.AppendRoleAnswer(nil, wire.RoleAnswer{Yes: a.Yes, Text: a.Text}))
	}
}
