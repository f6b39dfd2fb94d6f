package replication

import (
	"fmt"
	"strings"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// The replication decisions as one pure function: step takes what a node
// knows of itself (State) and something that happened (an Event) and
// returns the node's new state and the actions its Resource must perform,
// in order. It takes no lock and touches no file, socket, log or clock;
// whatever it needs to know of the world comes in the event (the peer's
// Hello, the journal's retained seqs, a fresh random id). The Resource
// holds the state under Resource.mu and is the only caller:
//
//	s, acts := step(r.coreState(), ev)
//	r.setCoreState(s)
//	for _, a := range acts { /* save meta, send a refusal, start a sync, ... */ }
//
// testdata/core/*.txt holds its scripted tests (see core_test.go).

// State is what the decisions read and change of a node.
type State struct {
	NodeID        uint64
	Role          wire.Role
	Disk          wire.DiskState
	Gen           wire.GenIDs
	DiscardMyData bool // resolve --discard-my-data: give in at the next connection
	// LostFrom is the first seq this node may have lost (see
	// wire.Hello.LostFrom); zero once a resync with the peer ended.
	LostFrom uint64
	// StandAlone says why this node will not connect ("" when it will);
	// Refusal is the reason a dialing peer is told: ReasonSplitBrain or
	// ReasonUnrelatedData when the data keeps the nodes apart, ReasonBusy
	// when an operator said so.
	StandAlone string
	Refusal    wire.Reason
	// AfterSplitBrain is the configured split-brain policy.
	AfterSplitBrain AfterSplitBrain

	Admitting bool // a connection is between its admission and AdmitEnd
	Linked    bool // a link to the peer is up
	Asking    bool // this node asked its peer to become Primary (AskingPrimary)
	// Connects counts the operator's words that send the node to meet its
	// peer again (connect, discard-my-data). A connection set up before the
	// last one (its Since is older) is judged no more: its verdict and the
	// peer's refusal on it change nothing.
	Connects uint64
	Peer     wire.Hello // what the peer said in its last admitted handshake
	// Source and Target: a resync runs on the link, from or to this node.
	Source, Target bool
	// DoneSent: this node, a resync's source, sent SyncDone in the
	// current generation and has no answer saying the target holds it
	// all: the target may have recorded itself UpToDate in that
	// generation. Saved (meta.json), so that it outlives a restart.
	DoneSent bool
}

// Event is something that happened to a node: one of the types below.
type Event interface{ event() }

// PeerHello: an authenticated peer finished the handshake on a new
// connection. Local is the Hello this node sent on it.
type PeerHello struct {
	Local, Remote wire.Hello
	Dialer        bool // this node dialed the connection
	// BackingOff: the last link failed soon after it came up, and the wait
	// before the next (see nextFlapDelay) is not over.
	BackingOff bool
	Since      uint64 // State.Connects when this node said Local
	// PeerSeq is the last seq of the records the peer acknowledged to
	// this node (Resource.peerSeq): a Diskless Primary's peer that no
	// longer holds them lacks what only the Primary's detached disk holds.
	PeerSeq uint64
}

// AdmitEnd: the admitted connection became the link, or failed before.
type AdmitEnd struct{}

// Attach: the admitted connection is the link now. OldestSeq and LastSeq
// are the first seq the journal still holds and its last one;
// LastExtentSeq is the seq of its last write made in place (0: none).
type Attach struct {
	Local, Remote wire.Hello
	Decision      Decision
	OldestSeq     uint64
	LastSeq       uint64
	LastExtentSeq uint64
}

// LinkLost: the link is gone. NewID is a fresh random generation id.
type LinkLost struct{ NewID uint64 }

// Promote: an operator asks for Primary. NewID is a fresh generation id.
type Promote struct {
	Force bool
	NewID uint64
}

// Demote: an operator asks for Secondary.
type Demote struct{}

// CmdConnect, CmdDisconnect and CmdDiscard are the operator's connect,
// disconnect and resolve --discard-my-data.
type (
	CmdConnect    struct{}
	CmdDisconnect struct{}
	CmdDiscard    struct{}
)

// SyncDoneAcked: the target acknowledged the end of the resync this node
// sent in generation Gen. Current: the link that carried it is still the
// link; Marks: regions are still marked out of sync.
type SyncDoneAcked struct {
	Gen            uint64
	Current, Marks bool
}

// SyncDoneReceived: the source's SyncDone came, after every resync record
// it sent; the journal holds them all.
type SyncDoneReceived struct{ Gen uint64 }

// SyncDoneSent: this node, a resync's source, is about to send SyncDone on
// the link: its target may record itself UpToDate in the current
// generation. Saved first (meta.DoneSent).
type SyncDoneSent struct{}

// SyncStartReceived: the source began a resync on the current link (the
// first, decided at Attach, or another pass after marks were left).
type SyncStartReceived struct{}

// MarksWhileLinked: regions were marked while the link was established and
// no resync ran.
type MarksWhileLinked struct{}

// PeerAsksPrimary: the peer asks, over the link, to become Primary.
type PeerAsksPrimary struct{}

// AskingPrimary: this node asks its peer before becoming Primary (On), or
// no longer does (it has the answer, or gave up).
type AskingPrimary struct{ On bool }

// PeerVerdict: after this node refused a connection (Mine: for its data,
// or busy on fresh Hellos), the peer's own word on it: Ready, a Refuse
// with Reason and Text, or nothing (Lost: the connection failed first).
type PeerVerdict struct {
	Mine   Refuse
	Ready  bool
	Reason wire.Reason
	Text   string
	Lost   bool
	Since  uint64 // State.Connects when this node said its Hello on the connection
}

// RefusedByPeer: the peer refused a connection and said why.
type RefusedByPeer struct {
	Reason wire.Reason
	Text   string
	Since  uint64 // State.Connects when this node said its Hello on the connection
}

func (PeerHello) event()         {}
func (AdmitEnd) event()          {}
func (Attach) event()            {}
func (LinkLost) event()          {}
func (Promote) event()           {}
func (Demote) event()            {}
func (CmdConnect) event()        {}
func (CmdDisconnect) event()     {}
func (CmdDiscard) event()        {}
func (SyncDoneAcked) event()     {}
func (SyncDoneReceived) event()  {}
func (SyncStartReceived) event() {}
func (SyncDoneSent) event()      {}
func (MarksWhileLinked) event()  {}
func (PeerAsksPrimary) event()   {}
func (AskingPrimary) event()     {}
func (RefusedByPeer) event()     {}
func (PeerVerdict) event()       {}

// Action is something the Resource must do: one of the types below.
type Action interface{ action() }

type (
	// SaveMeta: persist the state's generation ids, disk state and
	// discard-my-data flag.
	SaveMeta struct{}
	// Drop: close the connection without a word; the peer keeps the other
	// one (both dialed), or it was admitted on a Hello that no longer
	// holds (see attached).
	Drop struct{}
	// Refuse: tell the peer why this connection is not taken, and close it.
	Refuse struct {
		Reason wire.Reason
		Text   string
	}
	// AwaitVerdict: read the peer's Ready or Refuse on the connection this
	// node refused, and step PeerVerdict with it.
	AwaitVerdict struct{}
	// GoStandAlone: this node stopped connecting (State.StandAlone says why).
	GoStandAlone struct {
		Reason wire.Reason
		Text   string
	}
	// Admit: go on with the connection (agree, then attach) as Decision says.
	Admit struct{ Decision Decision }
	// FailLink: take the current link down (the same peer came back before
	// this node noticed it was gone).
	FailLink struct{}
	// StartSync: this node is the source of a resync in Mode. InPlace: the
	// journal tail holds a write made in place, so its target is
	// Inconsistent until the end (see wire.SyncStart).
	StartSync struct {
		Mode    wire.SyncMode
		Full    bool
		InPlace bool
	}
	// NewGeneration: the state's current generation id is new.
	NewGeneration struct{}
	// SkipSeqs: move the seqs this node hands out past any its old Primary
	// may have used (it was promoted alone).
	SkipSeqs struct{}
	// Deny: refuse the operator's command with this text.
	Deny struct{ Text string }
	// Reconnect: close the link so that it is made again (the peer learns
	// the new role).
	Reconnect struct{}
	// CloseLink: close the link and stay apart.
	CloseLink struct{}
	// Wake: the dialer waits for a change of the link or StandAlone state.
	Wake struct{}
	// FlushWrites: every acknowledged write durable on both nodes (Sync).
	FlushWrites struct{}
	// ClearMarks: forget every out-of-sync mark.
	ClearMarks struct{}
	// PeerUpToDate: the resync is over, the peer holds this node's data.
	PeerUpToDate struct{}
	// UpToDate: the resync to this node is over.
	UpToDate struct{}
	// Answer: tell the peer whether it may become Primary.
	Answer struct {
		Yes  bool
		Text string // why not
	}
)

func (SaveMeta) action()      {}
func (Drop) action()          {}
func (Refuse) action()        {}
func (GoStandAlone) action()  {}
func (AwaitVerdict) action()  {}
func (Admit) action()         {}
func (StartSync) action()     {}
func (NewGeneration) action() {}
func (SkipSeqs) action()      {}
func (Deny) action()          {}
func (Reconnect) action()     {}
func (CloseLink) action()     {}
func (FailLink) action()      {}
func (Wake) action()          {}
func (FlushWrites) action()   {}
func (ClearMarks) action()    {}
func (PeerUpToDate) action()  {}
func (UpToDate) action()      {}
func (Answer) action()        {}

// step is the decision core: the new state and the actions for e.
func step(s State, e Event) (State, []Action) {
	switch e := e.(type) {
	case PeerHello:
		return admit(s, e)
	case AdmitEnd:
		s.Admitting = false
		return s, nil
	case Attach:
		return attached(s, e)
	case LinkLost:
		return linkLost(s, e)
	case Promote:
		return promote(s, e)
	case Demote:
		return demote(s)
	case CmdConnect:
		s.StandAlone, s.Refusal = "", 0
		s.Connects++
		return s, []Action{Wake{}}
	case CmdDisconnect:
		s.StandAlone, s.Refusal = "disconnected by command", wire.ReasonBusy
		return s, []Action{CloseLink{}, Wake{}}
	case CmdDiscard:
		return discard(s)
	case DiskFailed:
		return diskFailed(s, e)
	case PeerDiskState:
		return peerDiskState(s, e)
	case SyncDoneAcked:
		return syncDoneAcked(s, e)
	case MarksWhileLinked:
		// A Primary syncs them at once, by another bitmap pass; a
		// Secondary's marks join the Primary's at the next pass.
		if !s.Linked || s.Source || s.Target || s.Role != wire.Primary || s.Disk == wire.Diskless {
			return s, nil
		}
		s.Source = true
		return s, []Action{StartSync{Mode: wire.SyncBitmap}}
	case SyncDoneSent:
		if !s.Source || s.DoneSent {
			return s, nil
		}
		s.DoneSent = true
		return s, []Action{SaveMeta{}}
	case SyncStartReceived:
		if s.Linked {
			s.Target = true
		}
		return s, nil
	case SyncDoneReceived:
		return syncDoneReceived(s, e)
	case RefusedByPeer:
		return refusedByPeer(s, e)
	case PeerAsksPrimary:
		return peerAsksPrimary(s)
	case AskingPrimary:
		s.Asking = e.On
		return s, nil
	case PeerVerdict:
		return verdict(s, e)
	}
	panic(fmt.Sprintf("replication: step: unknown event %T", e))
}

// canonical says whether a connection is the one to keep: when both nodes
// dial, the one dialed by the lower node id. A node that does not dial
// (it is StandAlone, or has no peer address) says so in its Hello.
func canonical(local, remote wire.Hello, dialer bool) bool {
	if local.Flags&wire.Dials == 0 || remote.Flags&wire.Dials == 0 {
		return true
	}
	if dialer {
		return local.NodeID < remote.NodeID
	}
	return remote.NodeID < local.NodeID
}

// admit decides whether an authenticated peer may become the link and what
// the generation ids say. A link to the same peer node is replaced: the
// peer came back before this node noticed it was gone. A node that is
// StandAlone for its data tells the peer why, so that it goes StandAlone
// as well, if the peer's Hello still gives that finding. A node that finds
// a split brain or unrelated data refuses, and goes StandAlone once it has
// the peer's word on the same Hellos (PeerVerdict): a Hello sent before its
// node changed (a lost link, a promotion) or before the operator's last
// connect is refused as busy, and judged again on a fresh connection.
func admit(s State, e PeerHello) (State, []Action) {
	switch {
	case s.Disk == wire.Diskless && s.Role != wire.Primary:
		return s, []Action{Refuse{wire.ReasonDiskless, "this node is Diskless: its disk failed or was detached"}}
	case s.StandAlone != "" && (s.Refusal == wire.ReasonSplitBrain || s.Refusal == wire.ReasonUnrelatedData):
		if reason, _ := refusal(s, outcome(s, e.Local, e.Remote, e.PeerSeq), e.Remote); reason == 0 {
			// What made it StandAlone no longer holds on these Hellos (the
			// peer refused as a Primary was demoted since): it waits for
			// the operator's connect, and its old word would make the
			// peer StandAlone on a finding that is gone.
			return s, []Action{Refuse{wire.ReasonBusy, "StandAlone: " + s.StandAlone}}
		}
		return s, []Action{Refuse{s.Refusal, s.StandAlone}}
	case s.StandAlone != "":
		return s, []Action{Refuse{wire.ReasonBusy, "StandAlone: " + s.StandAlone}}
	case !canonical(e.Local, e.Remote, e.Dialer):
		return s, []Action{Drop{}}
	case changedSince(s, e.Local):
		// The peer decides on the Hello it was sent, which no longer holds.
		return s, []Action{Refuse{wire.ReasonBusy, "this node changed while the connection was set up"}}
	case e.Since != s.Connects:
		// Said before the operator's last connect or discard: the peer's
		// verdict would change nothing here (see verdict), so this node
		// gives none on the data either.
		return s, []Action{Refuse{wire.ReasonBusy, "this node was told to connect while the connection was set up"}}
	// Busy below, on Hellos that hold: the peer's word on the data (a split
	// brain it found) is taken all the same (see verdict).
	case s.Admitting:
		return s, []Action{Refuse{wire.ReasonBusy, "another connection is being set up"}, AwaitVerdict{}}
	case s.Linked && e.Remote.NodeID != s.Peer.NodeID:
		return s, []Action{Refuse{wire.ReasonBusy, "already connected to another node"}}
	case s.Linked:
		// The old link goes down first, and its writes are marked; the
		// peer dials again and meets this node's state after that.
		return s, []Action{FailLink{}, Refuse{wire.ReasonBusy, "the previous connection is being closed; dial again"}, AwaitVerdict{}}
	case e.BackingOff:
		return s, []Action{Refuse{wire.ReasonBusy, "the last link failed soon after it came up: waiting before the next"}, AwaitVerdict{}}
	}
	d := outcome(s, e.Local, e.Remote, e.PeerSeq)
	if reason, text := refusal(s, d, e.Remote); text != "" {
		return s, []Action{Refuse{reason, text}, AwaitVerdict{}}
	}
	if s.Role == wire.Primary && e.Remote.Role == wire.Primary && !plant.On(plant.PromoteOverPrimary) {
		return s, []Action{Refuse{wire.ReasonBusy, "both nodes are Primary: demote one"}, AwaitVerdict{}}
	}
	s.Admitting = true
	return s, []Action{Admit{Decision: d}}
}

// changedSince says whether the node changed since it sent Hello h: the
// peer's decisions on h no longer hold.
func changedSince(s State, h wire.Hello) bool {
	return h.Gen != s.Gen || h.Role != s.Role || h.Disk != s.Disk ||
		(h.Flags&wire.DiscardMyData != 0) != s.DiscardMyData
}

// outcome is what the generation ids, the operator's word, the bitmaps and
// the split-brain policy say of two nodes; peerSeq is PeerHello.PeerSeq.
func outcome(s State, local, remote wire.Hello, peerSeq uint64) Decision {
	lw, rw := local.Flags&wire.HasOutOfSync != 0, remote.Flags&wire.HasOutOfSync != 0
	l := side{primary: s.Role == wire.Primary, id: s.NodeID, wrote: lw, dirty: lw || local.LastSeq > remote.LastSeq}
	p := side{primary: remote.Role == wire.Primary, id: remote.NodeID, wrote: rw,
		dirty: rw || remote.LastSeq > local.LastSeq}
	ld, rd := giveIn(s.DiscardMyData, remote.Flags&wire.DiscardMyData != 0, local.Disk, remote.Disk)
	d := resolve(decide(s.Gen, remote.Gen), ld, rd)
	switch {
	case local.Disk == wire.Diskless || remote.Disk == wire.Diskless:
		d = disklessOutcome(local, remote, peerSeq)
	case d.Outcome == InSync:
		d = dirtyDirection(l, p)
	case d.Outcome == SplitBrain && s.AfterSplitBrain == DiscardZeroChanges:
		d = discardZeroChanges(l, p)
	}
	return wholeSource(d, local.Disk, remote.Disk)
}

// refusal says why this node will not go on with a decision, or "" when it
// will. Split brain and unrelated data make both nodes StandAlone: nothing
// is changed until an operator says which data wins.
func refusal(s State, d Decision, remote wire.Hello) (wire.Reason, string) {
	switch {
	case d.Outcome == SplitBrain && !plant.On(plant.MergeSplitBrain):
		return wire.ReasonSplitBrain, "split brain: both nodes wrote while apart"
	case d.Outcome == Unrelated:
		return wire.ReasonUnrelatedData, "unrelated data: the generation ids share no history"
	case d.Outcome == StalePeer && s.Disk == wire.Diskless:
		return wire.ReasonSplitBrain, "the peer lacks writes that only this Diskless Primary's detached disk holds"
	case d.Outcome == StalePeer:
		return wire.ReasonSplitBrain, "the Diskless Primary's detached disk holds writes this node lacks"
	case d.Outcome == SyncTarget && s.Role == wire.Primary:
		return wire.ReasonSplitBrain, "the peer holds newer data than this Primary"
	case d.Outcome == SyncSource && remote.Role == wire.Primary:
		return wire.ReasonSplitBrain, "this node holds newer data than the Primary peer"
	}
	return 0, ""
}

// verdict: this node refused a connection, and goes StandAlone for it
// unless the peer did not judge the same Hellos: it was busy, StandAlone
// by command, or changed while the connection was set up, or its word was
// lost with the connection (its Hello may no longer hold). Both then meet
// again later, on fresh Hellos. A node that was only busy on Hellos that
// hold takes the peer's word on the data: a split brain the peer found
// makes it StandAlone too, so that neither stays Connecting. A verdict on a
// connection set up before the operator's last connect or discard changes
// nothing: it would undo the operator's word (the peer may have been told
// to discard its data since it refused), and the next connection judges
// fresh Hellos.
func verdict(s State, e PeerVerdict) (State, []Action) {
	if s.StandAlone != "" || e.Since != s.Connects {
		return s, nil
	}
	if e.Lost {
		// The peer may have changed since its Hello (told to discard
		// its data): the next connection judges fresh Hellos.
		return s, nil
	}
	if e.Mine.Reason == wire.ReasonBusy {
		if e.Ready {
			return s, nil
		}
		return refusedByPeer(s, RefusedByPeer{Reason: e.Reason, Text: e.Text, Since: e.Since})
	}
	if !e.Ready && e.Reason == wire.ReasonBusy {
		return s, nil
	}
	s.StandAlone, s.Refusal = e.Mine.Text, e.Mine.Reason
	return s, []Action{GoStandAlone(e.Mine), Wake{}}
}

// refusedByPeer: a peer that will not connect because of the data (split
// brain, unrelated data) makes this node StandAlone too, with its reason;
// unless this node gave in (discard-my-data): it waits, Connecting, for
// the peer to be told to connect, and then takes its data. A refusal on a
// connection set up before the operator's last connect or discard changes
// nothing (see verdict).
func refusedByPeer(s State, e RefusedByPeer) (State, []Action) {
	if s.StandAlone != "" || s.DiscardMyData || e.Since != s.Connects ||
		e.Reason != wire.ReasonSplitBrain && e.Reason != wire.ReasonUnrelatedData {
		return s, nil
	}
	text := e.Reason.String() + " (found by the peer)"
	_, rest, ok := strings.Cut(e.Text, ": ")
	if ok && strings.HasPrefix(e.Text, e.Reason.String()) { // "split brain: ...", "split brain (found by the peer): ..."
		text += ": " + rest
	} else if e.Text != "" {
		text = fmt.Sprintf("%s (found by the peer, which says %q)", e.Reason, e.Text)
	}
	s.StandAlone, s.Refusal = text, e.Reason
	return s, []Action{GoStandAlone{e.Reason, text}, Wake{}}
}

func discard(s State) (State, []Action) {
	if s.Role == wire.Primary {
		return s, []Action{Deny{"a Primary cannot discard its data; demote it first"}}
	}
	s.DiscardMyData = true
	s.StandAlone, s.Refusal = "", 0
	s.Connects++
	return s, []Action{SaveMeta{}, Wake{}}
}

// String shows an action as the scripted tests spell it.
func actionString(a Action) string {
	switch a := a.(type) {
	case Refuse:
		return fmt.Sprintf("Refuse(%s, %q)", a.Reason, a.Text)
	case GoStandAlone:
		return fmt.Sprintf("GoStandAlone(%s, %q)", a.Reason, a.Text)
	case Admit:
		return fmt.Sprintf("Admit(%s, full=%v)", strings.ReplaceAll(a.Decision.Outcome.String(), " ", "-"), a.Decision.Full)
	case StartSync:
		if a.InPlace {
			return fmt.Sprintf("StartSync(%s, full=%v, in-place)", a.Mode, a.Full)
		}
		return fmt.Sprintf("StartSync(%s, full=%v)", a.Mode, a.Full)
	case Deny:
		return fmt.Sprintf("Deny(%q)", a.Text)
	case Answer:
		return fmt.Sprintf("Answer(yes=%v, %q)", a.Yes, a.Text)
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", a), "replication.")
}

// attached: the link is up. A source syncs from its journal's tail when
// the tail covers what the peer lacks, else from its bitmap. A tail that
// holds a write made in place sends what the disk holds there when read,
// maybe newer than the write: its target does not stay Consistent. A
// connection admitted on a Hello that no longer holds is not taken (Drop):
// the node was promoted, demoted, told to discard its data or to
// disconnect while the connection was set up, and the outcome was decided
// for the node it was. A promotion then found no link and went on alone;
// attached, it would be a Primary that syncs from a Primary peer. The next
// connection meets the node as it is.
func attached(s State, e Attach) (State, []Action) {
	if changedSince(s, e.Local) || s.StandAlone != "" {
		return s, []Action{Drop{}}
	}
	d := e.Decision
	s.Linked, s.Peer = true, e.Remote
	s.Source, s.Target = d.Outcome == SyncSource, d.Outcome == SyncTarget
	var acts []Action
	forgot := s.DoneSent && e.Remote.Gen.Current != s.Gen.Current
	if forgot {
		// Saved before a restart: the peer never reached this
		// generation, and only another SyncDone takes it there.
		s.DoneSent = false
		acts = append(acts, SaveMeta{})
	}
	if e.Remote.Disk == wire.Diskless && e.Remote.Role == wire.Primary {
		// Its detached disk holds the generation it left at diskFailed.
		s, more := peerDiskState(s, PeerDiskState{Disk: wire.Diskless, Gen: e.Remote.Gen.Current, Left: e.Remote.Gen.History[0]})
		return s, append(acts, more...)
	}
	if !s.Source && !s.Target && s.LostFrom != 0 {
		// Nothing to sync: neither node wrote apart and both hold the
		// same last seq, so no record past LostFrom was lost.
		s.LostFrom = 0
		if !forgot { // else saved already
			acts = append(acts, SaveMeta{})
		}
		return s, acts
	}
	if !s.Source {
		return s, acts
	}
	if !d.Full && tailCovers(e.Local, e.Remote, e.OldestSeq, e.LastSeq) {
		return s, append(acts, StartSync{Mode: wire.SyncTail, InPlace: e.LastExtentSeq > sameUpTo(e.Remote)})
	}
	return s, append(acts, StartSync{Mode: wire.SyncBitmap, Full: d.Full})
}

// tailCovers says whether the journal's tail can bring the peer up to date:
// the peer's disk is whole, it holds nothing this node lacks (no write made
// apart, no record past the seqs this node may have lost), and this journal
// (oldest to last) still holds every record after those the peer holds.
func tailCovers(local, remote wire.Hello, oldest, last uint64) bool {
	disk := remote.Disk == wire.UpToDate || remote.Disk == wire.Consistent
	lost := local.LostFrom != 0 && remote.LastSeq >= local.LostFrom
	from := sameUpTo(remote)
	clean := remote.Flags&wire.HasOutOfSync == 0 && !lost && remote.LastSeq <= local.LastSeq
	return disk && clean && from >= oldest-1 && from <= last
}

// sameUpTo is the last seq up to which a node's records are the writes
// its peer gave those seqs: past its LostFrom, it may have handed lost
// seqs to writes of its own.
func sameUpTo(h wire.Hello) uint64 {
	if h.LostFrom != 0 {
		return min(h.LastSeq, h.LostFrom-1)
	}
	return h.LastSeq
}

// linkLost: a Primary that goes on alone starts a new generation, so the
// peer's data is known to be behind. One whose bitmap counts from an older
// generation needs none, unless it sent a resync's SyncDone without an
// answer yet: its target may have recorded itself UpToDate in the current
// generation (it answers SyncDone so) while regions marked since (the
// writes that waited on the link) wait for another pass. Not at every
// link lost mid-resync: a link that flaps would push the generation the
// target holds out of the history, and the next meeting would look like
// a split brain.
//
// DoneSent outlives a restart: a Primary that opens goes on alone through
// a link loss too (at its first write apart, see Resource.goOnAlone).
func linkLost(s State, e LinkLost) (State, []Action) {
	done := s.DoneSent
	s.Linked, s.Source, s.Target, s.DoneSent = false, false, false, false
	acts := []Action{}
	moved := s.Role == wire.Primary && (s.Gen.Bitmap == 0 || done)
	if moved {
		s.Gen = newGeneration(s.Gen, e.NewID)
		acts = append(acts, NewGeneration{})
	}
	if moved || done {
		acts = append(acts, SaveMeta{})
	}
	return s, append(acts, Wake{})
}

// promote: a node becomes Primary with a whole disk (UpToDate, or
// Consistent: a state its peer really had, older but whole), or with any
// disk when forced, and never while its peer is Primary. A disk that was
// not UpToDate is from then on, in a generation of its own. Promoted alone,
// whatever it writes the peer lacks: a new generation (its bitmap, if it
// has one, still counts from the older one it names), and seqs its old
// Primary cannot have used.
func promote(s State, e Promote) (State, []Action) {
	if s.Role == wire.Primary {
		return s, nil
	}
	if s.Linked && s.Peer.Role == wire.Primary && !plant.On(plant.PromoteOverPrimary) {
		return s, []Action{Deny{"the peer is Primary"}}
	}
	whole := s.Disk == wire.UpToDate || s.Disk == wire.Consistent
	if !whole && !e.Force {
		why := "a resync has not finished"
		if s.Disk == wire.Outdated {
			why = "it went out while the peer took writes it lacks"
		}
		return s, []Action{Deny{fmt.Sprintf("the disk is %s (%s); --force promotes it anyway", s.Disk, why)}}
	}
	var acts []Action
	moved := s.Disk != wire.UpToDate
	if moved {
		s.Disk = wire.UpToDate
		s.Gen = newGeneration(s.Gen, e.NewID)
		acts = append(acts, NewGeneration{}, SaveMeta{})
	}
	if !s.Linked {
		// Alone, always a generation of its own, even with a bitmap
		// counting from an older one: its current one may be one its
		// peer moved on from (the peer's bitmap generation: it followed
		// this node's disk out, or a resync's end was not saved here),
		// and writes made in it would look older than the peer's.
		acts = append(acts, SkipSeqs{})
		if !moved {
			s.Gen = newGeneration(s.Gen, e.NewID)
			acts = append(acts, NewGeneration{}, SaveMeta{})
		}
	}
	if moved || !s.Linked {
		s.DoneSent = false // a new generation: a target of a SyncDone sent is behind it
	}
	if s.DiscardMyData {
		// A Primary never discards its data: the operator who promotes
		// it takes back the resolve that said it would. Kept, the flag
		// would settle a later split brain without the operator's word.
		s.DiscardMyData = false
		acts = append(acts, SaveMeta{})
	}
	s.Role = wire.Primary
	if s.Linked {
		acts = append(acts, Reconnect{})
	}
	return s, acts
}

// peerAsksPrimary: a connected peer may become Primary unless this node is
// Primary or about to be (it asked too: both are told no, and neither
// changes). A yes counts the peer Primary from then on, so this node
// refuses its own promotion before the link brings the peer's new role.
func peerAsksPrimary(s State) (State, []Action) {
	switch {
	case !s.Linked:
		return s, nil // asked on a link that is gone
	case s.Role == wire.Primary:
		return s, []Action{Answer{Text: "the peer is Primary"}}
	case s.Asking:
		return s, []Action{Answer{Text: "the peer is becoming Primary"}}
	}
	s.Peer.Role = wire.Primary
	return s, []Action{Answer{Yes: true}}
}

// demote: a Secondary makes what it acknowledged durable on both nodes
// and reconnects, so the peer learns its role.
func demote(s State) (State, []Action) {
	if s.Role == wire.Secondary {
		return s, nil
	}
	s.Role = wire.Secondary
	acts := []Action{FlushWrites{}}
	if s.Linked {
		acts = append(acts, Reconnect{})
	}
	return s, acts
}

// syncDoneAcked: the target holds everything of this generation; the
// bitmap generation is gone, both hold the same data. An ack that comes
// from a link that is gone, for an older generation, or while regions are
// still marked changes nothing. An Outdated source (its ids made it the
// newer side) holds what its peer now holds: it is UpToDate too.
func syncDoneAcked(s State, e SyncDoneAcked) (State, []Action) {
	if !e.Current || !s.Linked || s.Gen.Current != e.Gen {
		return s, nil
	}
	if e.Marks {
		// Regions marked while the resync ran (a write lost with the
		// previous link, one that failed here after the peer took it):
		// another pass carries them. Until its SyncStart makes the
		// target Inconsistent, the target is UpToDate in this
		// generation: DoneSent stays.
		return s, []Action{StartSync{Mode: wire.SyncBitmap}}
	}
	s.DoneSent = false
	s.Gen.Bitmap = 0
	s.Source = false
	s.LostFrom = 0
	s.Peer.Disk = wire.UpToDate
	if s.Disk == wire.Outdated {
		s.Disk = wire.UpToDate
	}
	return s, []Action{SaveMeta{}, PeerUpToDate{}}
}

// syncDoneReceived: the target is UpToDate in the source's generation; its
// own marks were sent to the source and synced from there. An Outdated
// source is UpToDate from then on as well (syncDoneAcked).
func syncDoneReceived(s State, e SyncDoneReceived) (State, []Action) {
	if s.Gen.Current != e.Gen {
		copy(s.Gen.History[1:], s.Gen.History[:])
		s.Gen.History[0] = s.Gen.Current
	}
	s.Gen.Current, s.Gen.Bitmap = e.Gen, 0
	s.Disk = wire.UpToDate
	if s.Peer.Disk == wire.Outdated {
		s.Peer.Disk = wire.UpToDate
	}
	s.DiscardMyData = false
	s.Target = false
	s.LostFrom = 0
	return s, []Action{ClearMarks{}, SaveMeta{}, UpToDate{}}
}

// newGeneration starts generation id: the data moves on without the peer.
// The old current id becomes the bitmap id (what the peer holds, the base
// of the out-of-sync bitmap) unless one is already set.
func newGeneration(g wire.GenIDs, id uint64) wire.GenIDs {
	if g.Bitmap == 0 {
		g.Bitmap = g.Current
	}
	copy(g.History[1:], g.History[:])
	g.History[0] = g.Current
	g.Current = id
	return g
}
