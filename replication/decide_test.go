package replication

import (
	"testing"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

func gen(current, bitmap uint64, history ...uint64) wire.GenIDs {
	g := wire.GenIDs{Current: current, Bitmap: bitmap}
	copy(g.History[:], history)
	return g
}

func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name string
		l, r wire.GenIDs
		want Decision
	}{
		{"two fresh empty devices", gen(GenZero, 0), gen(GenZero, 0), Decision{InSync, false}},
		{"same data", gen(7, 0, 5), gen(7, 0, 5), Decision{InSync, false}},
		{"I went on alone", gen(9, 7, 7), gen(7, 0), Decision{SyncSource, false}},
		{"the peer went on alone", gen(7, 0), gen(9, 7, 7), Decision{SyncTarget, false}},
		{"both went on alone", gen(9, 7, 7), gen(8, 7, 7), Decision{SplitBrain, false}},
		{"peer older than my bitmap", gen(11, 9, 9, 7), gen(7, 0), Decision{SyncSource, true}},
		{"I am older than the peer's bitmap", gen(7, 0), gen(11, 9, 9, 7), Decision{SyncTarget, true}},
		{"new empty peer", gen(9, 0, 3), gen(GenZero, 0), Decision{SyncSource, true}},
		{"I am a new empty peer", gen(GenZero, 0), gen(9, 0, 3), Decision{SyncTarget, true}},
		{"apart after a common past", gen(12, 0, 10, 5), gen(13, 0, 11, 5), Decision{SplitBrain, false}},
		{"no common history", gen(12, 0, 10), gen(13, 0, 11), Decision{Unrelated, false}},
		{"two unrelated disks", gen(12, 0), gen(13, 0), Decision{Unrelated, false}},
	} {
		if got := decide(c.l, c.r); got != c.want {
			t.Errorf("%s: decide = %v full=%v, want %v full=%v", c.name, got.Outcome, got.Full, c.want.Outcome, c.want.Full)
		}
		// The peer must reach the mirror decision.
		mirror := map[Outcome]Outcome{InSync: InSync, SyncSource: SyncTarget, SyncTarget: SyncSource,
			SplitBrain: SplitBrain, Unrelated: Unrelated}
		if got := decide(c.r, c.l); got.Outcome != mirror[c.want.Outcome] || got.Full != c.want.Full {
			t.Errorf("%s: the peer decides %v full=%v", c.name, got.Outcome, got.Full)
		}
	}
}

func TestResolveDiscardMyData(t *testing.T) {
	sb, un := Decision{Outcome: SplitBrain}, Decision{Outcome: Unrelated}
	for _, c := range []struct {
		name          string
		d             Decision
		local, remote bool
		want          Decision
	}{
		{"split brain, nobody gives in", sb, false, false, sb},
		{"split brain, both give in", sb, true, true, sb},
		{"split brain, I give in", sb, true, false, Decision{SyncTarget, true}},
		{"split brain, the peer gives in", sb, false, true, Decision{SyncSource, true}},
		{"unrelated, I give in", un, true, false, Decision{SyncTarget, true}},
		{"in sync stays in sync", Decision{Outcome: InSync}, true, false, Decision{Outcome: InSync}},
		{"a bitmap sync is kept", Decision{Outcome: SyncSource}, false, true, Decision{Outcome: SyncSource}},
	} {
		if got := resolve(c.d, c.local, c.remote); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestDirtyDirection(t *testing.T) {
	for _, c := range []struct {
		name string
		l, r side
		want Outcome
	}{
		{"clean", side{primary: true, id: 1}, side{id: 2}, InSync},
		{"crashed primary back as primary", side{primary: true, dirty: true, id: 1}, side{id: 2}, SyncSource},
		{"new primary, old one dirty", side{primary: true, id: 1}, side{dirty: true, id: 2}, SyncSource},
		{"I am dirty, the peer is Primary", side{dirty: true, id: 1}, side{primary: true, id: 2}, SyncTarget},
		{"only I am dirty", side{dirty: true, id: 5}, side{id: 2}, SyncSource},
		{"only the peer is dirty", side{id: 1}, side{dirty: true, id: 2}, SyncTarget},
		{"both dirty, lower id", side{dirty: true, id: 1}, side{dirty: true, id: 2}, SyncSource},
		{"both dirty, higher id", side{dirty: true, id: 3}, side{dirty: true, id: 2}, SyncTarget},
	} {
		got := dirtyDirection(c.l, c.r).Outcome
		back := dirtyDirection(c.r, c.l).Outcome
		mirror := map[Outcome]Outcome{InSync: InSync, SyncSource: SyncTarget, SyncTarget: SyncSource}
		if got != c.want || back != mirror[c.want] {
			t.Errorf("%s: %v (peer %v), want %v", c.name, got, back, c.want)
		}
	}
}

func TestDiscardZeroChanges(t *testing.T) {
	wrote, idle := side{dirty: true, wrote: true}, side{dirty: true}
	if d := discardZeroChanges(wrote, idle); d != (Decision{Outcome: SyncSource}) {
		t.Errorf("the side that wrote: %+v", d)
	}
	if d := discardZeroChanges(idle, wrote); d != (Decision{Outcome: SyncTarget}) {
		t.Errorf("the side that did not write: %+v", d)
	}
	if d := discardZeroChanges(wrote, wrote); d.Outcome != SplitBrain {
		t.Errorf("both wrote: %+v", d)
	}
}

func TestGiveIn(t *testing.T) {
	inc, up := wire.Inconsistent, wire.UpToDate
	for _, c := range []struct {
		name             string
		ld, rd           bool
		local, remote    wire.DiskState
		wantLoc, wantRem bool
	}{
		{"one told", true, false, up, up, true, false},
		{"none told", false, false, inc, up, false, false},
		{"both told, both whole", true, true, up, up, true, true},
		{"both told, both Inconsistent", true, true, inc, inc, true, true},
		{"both told, this one Inconsistent", true, true, inc, up, true, false},
		{"both told, the peer Inconsistent", true, true, up, inc, false, true},
		{"only the whole side told", false, true, inc, up, false, true},
	} {
		if l, r := giveIn(c.ld, c.rd, c.local, c.remote); l != c.wantLoc || r != c.wantRem {
			t.Errorf("%s: giveIn = %v, %v, want %v, %v", c.name, l, r, c.wantLoc, c.wantRem)
		}
	}
}
