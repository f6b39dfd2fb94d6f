package replication

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// TestCore runs the scripts in testdata/core: each command is an event fed
// to the decision core (or sets up the node), and its expected output is
// the actions the node performs, then its state. Run with -rewrite to
// write the outputs after a deliberate change, and read the diff.
//
// Generation ids are written current:bitmap:history, history comma-separated
// (9:7:7,1 is current 9, bitmap 7, history 7 then 1).
//
//	node id=1 role=Primary disk=UpToDate gen=9:7:7 [discard] [lost-from=N] [done-sent] [policy=discard-zero-changes]
//	     [standalone=split-brain|unrelated-data|busy] [linked peer=2 peer-role=Secondary peer-disk=UpToDate]
//	hello peer=2 role=Secondary disk=UpToDate gen=7:0 [lastseq=N peer-lastseq=N] [peer-seq=N]
//	     [flags=dials,oos,discard] [peer-flags=dials,oos,discard] [dialer] [sent-gen=7:0] [sent-before-discard] [backing-off]
//	     [before-connect]
//	attach outcome=SyncSource [full] peer=2 peer-disk=UpToDate lastseq=N peer-lastseq=N
//	     oldest=N last=N [last-extent=N] [peer-flags=oos] [peer-lost-from=N] [sent-role=Secondary] [sent-gen=7:0]
//	admit-end | link-lost newid=N | promote [force] newid=N | demote
//	connect | disconnect | discard | disk-failed newid=N [marks] | peer-disk disk=Diskless gen=N
//	sync-done-acked gen=N [stale] [marks] | sync-done gen=N | sync-done-sent
//	refused reason=split-brain [before-connect]     (the text the peer sent is the input)
//	verdict mine=split-brain [ready|lost|reason=busy] [before-connect]   (the text this node sent is the input)
//	peer-asks-primary | asking [off]
func TestCore(t *testing.T) {
	datadriven.Walk(t, "testdata/core", func(t *testing.T, path string) {
		var s State
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "node" {
				s = scriptNode(t, d)
				return stateString(s)
			}
			next, acts := step(s, scriptEvent(t, d, s))
			s = next
			var b strings.Builder
			for _, a := range acts {
				fmt.Fprintln(&b, actionString(a))
			}
			b.WriteString(stateString(s))
			return b.String()
		})
	})
}

func scriptNode(t *testing.T, d *datadriven.TestData) State {
	s := State{NodeID: argUint(t, d, "id", 1), Role: argRole(t, d, "role", "Secondary"),
		Disk: argDisk(t, d, "disk", "UpToDate"), Gen: argGen(t, d, "gen"), DiscardMyData: d.HasArg("discard"),
		LostFrom: argUint(t, d, "lost-from", 0), DoneSent: d.HasArg("done-sent")}
	if d.HasArg("policy") {
		s.AfterSplitBrain = AfterSplitBrain(argString(t, d, "policy", ""))
	}
	if d.HasArg("standalone") {
		s.Refusal = argReason(t, d, "standalone")
		s.StandAlone = strings.TrimSpace(d.Input)
	}
	if d.HasArg("linked") {
		s.Linked = true
		s.Peer = wire.Hello{NodeID: argUint(t, d, "peer", 2), Role: argRole(t, d, "peer-role", "Secondary"),
			Disk: argDisk(t, d, "peer-disk", "UpToDate")}
	}
	return s
}

func scriptEvent(t *testing.T, d *datadriven.TestData, s State) Event {
	switch d.Cmd {
	case "hello":
		local := wire.Hello{NodeID: s.NodeID, Role: s.Role, Disk: s.Disk, Gen: s.Gen,
			LastSeq: argUint(t, d, "lastseq", 0), LostFrom: s.LostFrom, Flags: argFlags(t, d, "flags")}
		if s.DiscardMyData && !d.HasArg("sent-before-discard") { // as Resource.hello says it
			local.Flags |= wire.DiscardMyData
		}
		if d.HasArg("sent-gen") { // the Hello was sent before the node changed
			local.Gen = argGen(t, d, "sent-gen")
		}
		return PeerHello{Local: local, Remote: scriptPeer(t, d), Dialer: d.HasArg("dialer"),
			BackingOff: d.HasArg("backing-off"), Since: scriptSince(d, s), PeerSeq: argUint(t, d, "peer-seq", 0)}
	case "attach":
		local := wire.Hello{NodeID: s.NodeID, Role: s.Role, Disk: s.Disk, Gen: s.Gen,
			LastSeq: argUint(t, d, "lastseq", 0), LostFrom: s.LostFrom}
		if s.DiscardMyData {
			local.Flags |= wire.DiscardMyData
		}
		if d.HasArg("sent-role") { // the Hello was sent before the node changed
			local.Role = argRole(t, d, "sent-role", "Secondary")
		}
		if d.HasArg("sent-gen") {
			local.Gen = argGen(t, d, "sent-gen")
		}
		out := map[string]Outcome{"InSync": InSync, "SyncSource": SyncSource, "SyncTarget": SyncTarget}
		o, ok := out[argString(t, d, "outcome", "InSync")]
		if !ok {
			d.Fatalf(t, "attach: unknown outcome")
		}
		return Attach{Local: local, Remote: scriptPeer(t, d), Decision: Decision{o, d.HasArg("full")},
			OldestSeq: argUint(t, d, "oldest", 1), LastSeq: argUint(t, d, "last", 0),
			LastExtentSeq: argUint(t, d, "last-extent", 0)}
	case "admit-end":
		return AdmitEnd{}
	case "link-lost":
		return LinkLost{NewID: argUint(t, d, "newid", 0)}
	case "promote":
		return Promote{Force: d.HasArg("force"), NewID: argUint(t, d, "newid", 0)}
	case "demote":
		return Demote{}
	case "connect":
		return CmdConnect{}
	case "disconnect":
		return CmdDisconnect{}
	case "discard":
		return CmdDiscard{}
	case "sync-done-acked":
		return SyncDoneAcked{Gen: argUint(t, d, "gen", 0), Current: !d.HasArg("stale"), Marks: d.HasArg("marks")}
	case "marks":
		return MarksWhileLinked{}
	case "sync-start":
		return SyncStartReceived{}
	case "sync-done-sent":
		return SyncDoneSent{}
	case "sync-done":
		return SyncDoneReceived{Gen: argUint(t, d, "gen", 0)}
	case "verdict":
		// verdict split-brain "text" ready|lost|reason=busy: what this node refused with is the input
		v := PeerVerdict{Mine: Refuse{argReason(t, d, "mine"), strings.TrimSpace(d.Input)},
			Ready: d.HasArg("ready"), Lost: d.HasArg("lost"), Since: scriptSince(d, s)}
		if d.HasArg("reason") {
			v.Reason = argReason(t, d, "reason")
		}
		return v
	case "refused":
		return RefusedByPeer{Reason: argReason(t, d, "reason"), Text: strings.TrimSpace(d.Input), Since: scriptSince(d, s)}
	case "peer-asks-primary":
		return PeerAsksPrimary{}
	case "asking":
		return AskingPrimary{On: !d.HasArg("off")}
	case "disk-failed":
		return DiskFailed{Text: strings.TrimSpace(d.Input), NewID: argUint(t, d, "newid", 0), Marks: d.HasArg("marks")}
	case "peer-disk":
		return PeerDiskState{Disk: argDisk(t, d, "disk", "UpToDate"), Gen: argUint(t, d, "gen", 0), Left: argUint(t, d, "left", 0)}
	}
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return nil
}

// scriptPeer is the peer's Hello from a hello or attach command.
func scriptPeer(t *testing.T, d *datadriven.TestData) wire.Hello {
	return wire.Hello{NodeID: argUint(t, d, "peer", 2), Role: argRole(t, d, "role", "Secondary"),
		Disk: argDisk(t, d, "peer-disk", argDisk(t, d, "disk", "UpToDate").String()), Gen: argGen(t, d, "gen"),
		LastSeq: argUint(t, d, "peer-lastseq", 0), LostFrom: argUint(t, d, "peer-lost-from", 0),
		Flags: argFlags(t, d, "peer-flags")}
}

func stateString(s State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state: %s %s gen=%s", s.Role, s.Disk, genString(s.Gen))
	if s.DiscardMyData {
		b.WriteString(" discard-my-data")
	}
	if s.LostFrom != 0 {
		fmt.Fprintf(&b, " lost-from=%d", s.LostFrom)
	}
	if s.Admitting {
		b.WriteString(" admitting")
	}
	if s.Asking {
		b.WriteString(" asking")
	}
	if s.Linked {
		fmt.Fprintf(&b, " linked(peer %d %s %s)", s.Peer.NodeID, s.Peer.Role, s.Peer.Disk)
	}
	if s.Source {
		b.WriteString(" SyncSource")
	}
	if s.Target {
		b.WriteString(" SyncTarget")
	}
	if s.DoneSent {
		b.WriteString(" done-sent")
	}
	if s.StandAlone != "" {
		fmt.Fprintf(&b, "\nStandAlone(%s, %q)", s.Refusal, s.StandAlone)
	}
	return b.String() + "\n"
}

func genString(g wire.GenIDs) string {
	var h []string
	for _, id := range g.History {
		if id != 0 {
			h = append(h, strconv.FormatUint(id, 10))
		}
	}
	s := fmt.Sprintf("%d:%d", g.Current, g.Bitmap)
	if len(h) > 0 {
		s += ":" + strings.Join(h, ",")
	}
	return s
}

func argString(t *testing.T, d *datadriven.TestData, key, def string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			return strings.Join(a.Vals, ",")
		}
	}
	return def
}

func argUint(t *testing.T, d *datadriven.TestData, key string, def uint64) uint64 {
	if !d.HasArg(key) {
		return def
	}
	v, err := strconv.ParseUint(argString(t, d, key, ""), 10, 64)
	if err != nil {
		d.Fatalf(t, "%s: %v", key, err)
	}
	return v
}

func argRole(t *testing.T, d *datadriven.TestData, key, def string) wire.Role {
	switch v := argString(t, d, key, def); v {
	case "Primary":
		return wire.Primary
	case "Secondary":
		return wire.Secondary
	default:
		d.Fatalf(t, "unknown role %q", v)
	}
	return 0
}

func argDisk(t *testing.T, d *datadriven.TestData, key, def string) wire.DiskState {
	v := argString(t, d, key, def)
	disk, err := parseDiskState(v)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return disk
}

func argReason(t *testing.T, d *datadriven.TestData, key string) wire.Reason {
	v := strings.ReplaceAll(argString(t, d, key, ""), "-", " ")
	for r := wire.Reason(1); r < 32; r++ {
		if r.String() == v {
			return r
		}
	}
	d.Fatalf(t, "unknown reason %q", v)
	return 0
}

func argGen(t *testing.T, d *datadriven.TestData, key string) wire.GenIDs {
	var g wire.GenIDs
	if !d.HasArg(key) {
		return g
	}
	parts := strings.Split(argString(t, d, key, ""), ":")
	ids := func(s string) []uint64 {
		var out []uint64
		for _, f := range strings.Split(s, ",") {
			id, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				d.Fatalf(t, "gen %s: %v", s, err)
			}
			out = append(out, id)
		}
		return out
	}
	g.Current = ids(parts[0])[0]
	if len(parts) > 1 {
		g.Bitmap = ids(parts[1])[0]
	}
	if len(parts) > 2 {
		copy(g.History[:], ids(parts[2]))
	}
	return g
}

func argFlags(t *testing.T, d *datadriven.TestData, key string) wire.HelloFlags {
	var f wire.HelloFlags
	if !d.HasArg(key) {
		return f
	}
	for _, name := range strings.Split(argString(t, d, key, ""), ",") {
		switch name {
		case "dials":
			f |= wire.Dials
		case "oos":
			f |= wire.HasOutOfSync
		case "discard":
			f |= wire.DiscardMyData
		default:
			d.Fatalf(t, "unknown hello flag %q", name)
		}
	}
	return f
}

// scriptSince is the State.Connects a verdict or refusal comes with: the
// node's own, or the one before its last connect with before-connect (the
// connection was set up before the operator's word).
func scriptSince(d *datadriven.TestData, s State) uint64 {
	if d.HasArg("before-connect") {
		return s.Connects - 1
	}
	return s.Connects
}
