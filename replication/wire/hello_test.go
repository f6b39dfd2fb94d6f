package wire

import (
	"errors"
	"strings"
	"testing"
)

func testHello(node uint64) Hello {
	h := Hello{
		Flags:    DiscardMyData,
		Resource: "r0",
		Size:     1 << 30,
		NodeID:   node,
		Role:     Secondary,
		Disk:     UpToDate,
		Gen:      GenIDs{Current: 0x1111, Bitmap: 0x2222, History: [HistoryLen]uint64{3, 4, 5, 6}},
		LastSeq:  12345,
		LostFrom: 12000,
	}
	for i := range h.Nonce {
		h.Nonce[i] = byte(node) + byte(i)
	}
	return h
}

func TestHelloRoundTrip(t *testing.T) {
	h := testHello(0xfeed)
	h.Version = Version
	h.Flags |= DiscardMyData
	h.Role = Primary
	h.Disk = Outdated
	h.Resource = strings.Repeat("n", MaxResourceName)
	b, err := AppendHello(nil, &h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHello(mustRead(t, b).Body)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("got  %+v\nwant %+v", got, h)
	}
}

func TestHelloZeroVersionIsCurrent(t *testing.T) {
	h := testHello(1)
	b, _ := AppendHello(nil, &h)
	got, err := ParseHello(mustRead(t, b).Body)
	if err != nil || got.Version != Version {
		t.Fatalf("version %d, %v", got.Version, err)
	}
}

func TestHelloInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Hello)
	}{
		{"empty name", func(h *Hello) { h.Resource = "" }},
		{"long name", func(h *Hello) { h.Resource = strings.Repeat("n", MaxResourceName+1) }},
		{"node zero", func(h *Hello) { h.NodeID = 0 }},
		{"role", func(h *Hello) { h.Role = 3 }},
		{"disk", func(h *Hello) { h.Disk = 0 }},
	} {
		h := testHello(1)
		tc.edit(&h)
		if _, err := AppendHello(nil, &h); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: AppendHello: %v, want ErrMalformed", tc.name, err)
		}
		// The same Hello built by hand is refused by the parser.
		if _, err := ParseHello(appendHelloBody(nil, &h)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseHello: %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestParseHelloBadBodies(t *testing.T) {
	h := testHello(1)
	good := appendHelloBody(nil, &h)
	other := testHello(1)
	other.Version = Version + 1
	v2 := appendHelloBody(nil, &other)
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"no magic", append([]byte("HTTP"), good[4:]...), ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"fixed part only", good[:helloFixed], ErrMalformed},
		{"trailing", append(good, 0), ErrMalformed},
		{"next version", v2, ErrUnknownVersion},
		{"next version truncated", v2[:6], ErrUnknownVersion},
	} {
		got, err := ParseHello(tc.body)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == ErrUnknownVersion && got.Version != Version+1 {
			t.Errorf("%s: version %d not reported", tc.name, got.Version)
		}
	}
}

func TestCheckHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(remote *Hello)
		want Reason // 0: accepted
	}{
		{"same resource", func(*Hello) {}, 0},
		{"roles and disks may differ", func(r *Hello) { r.Role, r.Disk = Primary, Inconsistent }, 0},
		{"generations are not judged", func(r *Hello) { r.Gen = GenIDs{Current: 9}; r.LastSeq = 0 }, 0},
		{"explicit current version", func(r *Hello) { r.Version = Version }, 0},
		{"other version", func(r *Hello) { r.Version = Version + 1 }, ReasonUnknownVersion},
		{"other resource", func(r *Hello) { r.Resource = "r1" }, ReasonOtherResource},
		{"other size", func(r *Hello) { r.Size++ }, ReasonOtherSize},
		{"same node", func(r *Hello) { r.NodeID = 1 }, ReasonSameNode},
		{"version first", func(r *Hello) { r.Version, r.Resource = 9, "x" }, ReasonUnknownVersion},
	} {
		local, remote := testHello(1), testHello(2)
		tc.edit(&remote)
		err := CheckHello(local, remote)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var re *RefusedError
		if !errors.As(err, &re) || re.Reason != tc.want || re.ByPeer || re.Text == "" {
			t.Errorf("%s: got %v, want a refusal for %v", tc.name, err, tc.want)
		}
	}
}
