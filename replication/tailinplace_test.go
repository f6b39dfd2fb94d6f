package replication

import (
	"bytes"
	"testing"
)

// TestTailTargetConsistentOnlyWithoutWritesInPlace: a journal-tail resync
// keeps its target Consistent only while the tail holds no write made in
// place (its data is read from the source's disk when sent, maybe newer
// than the write). Both nodes' status say so: the Primary's peer disk and
// the Secondary's own, from the tail's start, or from the first write in
// place the tail carries when one comes during it. The images end
// identical.
func TestTailTargetConsistentOnlyWithoutWritesInPlace(t *testing.T) {
	small := bytes.Repeat([]byte{0x11}, 4096)
	big := bytes.Repeat([]byte{0x22}, 64<<10) // journal-data-max 64K: in place
	var smalls [][]byte                       // a tail of four seconds at 16 KiB/s
	for range 16 {
		smalls = append(smalls, small)
	}
	for _, tc := range []struct {
		name   string
		apart  [][]byte // written while apart, one after the other
		gap    int64    // between their offsets
		during []byte   // written once the target is Consistent, if set
		want   string   // the target's disk state during the tail
	}{
		{"journaled writes only", smalls, 32 << 10, nil, "Consistent"},
		{"a write in place apart", [][]byte{small, big, small}, 64 << 10, nil, "Inconsistent"},
		{"a write in place during the tail", smalls, 32 << 10, big, "Inconsistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := openPairWith(t, testSize, func(pc, sc *Config) {
				pc.JournalDataMax, sc.JournalDataMax = 64<<10, 64<<10
				pc.ResyncRate = 16 << 10 // slow: the tail lasts long enough to be seen on a loaded machine
				slowMachine(pc, sc)
			}, nil)
			p.waitInSync(t)
			p.primary.Disconnect()
			for i, b := range tc.apart {
				// Apart: a write in place over a journaled one the synced
				// disk may lack would be journaled whole.
				if _, err := p.primary.WriteAt(b, int64(i)*tc.gap); err != nil {
					t.Fatal(err)
				}
			}
			p.primary.Connect()
			untilSlow(t, "the target never left UpToDate", func() bool { return p.secondary.Status().Disk != "UpToDate" })
			first := "Consistent"
			if tc.during == nil {
				first = tc.want
			}
			if got := p.secondary.Status().Disk; got != first {
				t.Fatalf("target disk %s at the tail's start, want %s", got, first)
			}
			if st := p.primary.Status(); st.Peer.Replication == "SyncSource" && st.Peer.Resync.Mode == "journal tail" &&
				st.Peer.Disk != first {
				t.Fatalf("the source says its peer is %s, want %s", st.Peer.Disk, first)
			}
			if tc.during != nil {
				if _, err := p.primary.WriteAt(tc.during, 768<<10); err != nil {
					t.Fatal(err)
				}
				untilSlow(t, "the target stayed "+first, func() bool { return p.secondary.Status().Disk == tc.want })
			}
			p.waitInSync(t)
			if got := p.secondary.Status().Disk; got != "UpToDate" {
				t.Fatalf("target disk %s after the resync", got)
			}
			p.sameImages(t)
		})
	}
}
