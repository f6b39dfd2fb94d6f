package replication

import (
	"bytes"
	"testing"
)

func TestReadRemote(t *testing.T) {
	type in = readInputs
	for _, tc := range []struct {
		name string
		in   in
		want bool
	}{
		{"prefer-local", in{Policy: PreferLocal, PeerUsable: true, LocalPending: 100, Congested: true, Turn: 1}, false},
		{"no policy", in{PeerUsable: true, LocalPending: 100, Congested: true, Turn: 1}, false},
		{"prefer-remote", in{Policy: PreferRemote, PeerUsable: true}, true},
		{"prefer-remote, peer unusable", in{Policy: PreferRemote}, false},
		{"round-robin, even turn", in{Policy: RoundRobin, PeerUsable: true, Turn: 2}, false},
		{"round-robin, odd turn", in{Policy: RoundRobin, PeerUsable: true, Turn: 3}, true},
		{"round-robin, odd turn, peer unusable", in{Policy: RoundRobin, Turn: 3}, false},
		{"least-pending, both idle", in{Policy: LeastPending, PeerUsable: true}, false},
		{"least-pending, tie", in{Policy: LeastPending, PeerUsable: true, LocalPending: 4, RemotePending: 4}, false},
		{"least-pending, local busier", in{Policy: LeastPending, PeerUsable: true, LocalPending: 5, RemotePending: 4}, true},
		{"least-pending, remote busier", in{Policy: LeastPending, PeerUsable: true, LocalPending: 1, RemotePending: 4}, false},
		{"least-pending, local busier, peer unusable", in{Policy: LeastPending, LocalPending: 5}, false},
		{"when-congested-remote, calm", in{Policy: WhenCongestedRemote, PeerUsable: true, LocalPending: 3}, false},
		{"when-congested-remote, congested", in{Policy: WhenCongestedRemote, PeerUsable: true, Congested: true}, true},
		{"when-congested-remote, congested, peer unusable", in{Policy: WhenCongestedRemote, Congested: true}, false},
	} {
		if got := readRemote(tc.in); got != tc.want {
			t.Errorf("%s: remote %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseReadBalancing(t *testing.T) {
	for _, s := range []string{"prefer-local", "prefer-remote", "round-robin", "least-pending", "when-congested-remote"} {
		if b, err := ParseReadBalancing(s); err != nil || string(b) != s {
			t.Errorf("%s: %q, %v", s, b, err)
		}
	}
	for _, s := range []string{"", "32K-striping", "Prefer-Local"} {
		if _, err := ParseReadBalancing(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestReadAtRoundRobin: with round-robin every other read is served by
// the peer (counted in read_remote), each returns what was written; with
// the link down every read is served here.
func TestReadAtRoundRobin(t *testing.T) {
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		smallJournals(pc, sc)
		pc.ReadBalancing = RoundRobin
	}, nil)
	p.waitInSync(t)
	data := bytes.Repeat([]byte("round-robin read"), testSize/16)
	if _, err := p.primary.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	for i := range 20 {
		off := int64(i) * 4096
		if _, err := p.primary.ReadAt(got, off); err != nil || !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("read %d: %v, or other data", i, err)
		}
	}
	if n := p.primary.Status().Stats.ReadRemote; n != 10 {
		t.Fatalf("the peer served %d of 20 reads, want 10", n)
	}
	p.primary.Disconnect()
	until(t, "the link stayed", func() bool { return p.primary.currentLink() == nil })
	for i := range 20 {
		if _, err := p.primary.ReadAt(got, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.primary.Status().Stats.ReadRemote; n != 10 {
		t.Fatalf("the peer served %d reads, 10 before the link went", n)
	}
}
