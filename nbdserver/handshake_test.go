package nbdserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

const testSize = 4 << 20

// step sends one option and expects replies of these kinds (see optReply.kind).
type step struct {
	opt  uint32
	data []byte
	want []string
}

func TestHandshake(t *testing.T) {
	goDefault := step{optGo, infoData(""), []string{"info:export", "info:block", "ack"}}
	tests := []struct {
		name   string
		cflags uint32
		steps  []step
		raw    []byte // sent after the steps, if any
		then   string // "transmission", "closed" or ""
	}{
		{name: "go default export", cflags: flagCFixedNewstyle, steps: []step{goDefault}, then: "transmission"},
		{name: "go by name with info requests", cflags: flagCFixedNewstyle | flagCNoZeroes, steps: []step{
			{optGo, infoData("disk", infoBlockSize, infoName, infoDescription, 999),
				[]string{"info:export", "info:block", "info:name=disk", "ack"}},
		}, then: "transmission"},
		{name: "info then go", cflags: flagCFixedNewstyle, steps: []step{
			{optInfo, infoData("disk", infoBlockSize), []string{"info:export", "info:block", "ack"}},
			goDefault,
		}, then: "transmission"},
		{name: "list", cflags: flagCFixedNewstyle, steps: []step{
			{optList, nil, []string{"server:disk", "ack"}},
			{optList, []byte{1}, []string{"err:invalid"}},
			goDefault,
		}, then: "transmission"},
		{name: "abort", cflags: flagCFixedNewstyle, steps: []step{{optAbort, nil, []string{"ack"}}}, then: "closed"},
		{name: "starttls refused then go", cflags: flagCFixedNewstyle, steps: []step{
			{optStartTLS, nil, []string{"err:policy"}}, goDefault,
		}, then: "transmission"},
		{name: "unknown options refused", cflags: flagCFixedNewstyle, steps: []step{
			{42, []byte("xyz"), []string{"err:unsup"}},
			{optStructuredReply, nil, []string{"err:unsup"}},
			{optSetMetaContext, infoData("disk"), []string{"err:unsup"}},
			{optExtendedHeaders, nil, []string{"err:unsup"}},
			goDefault,
		}, then: "transmission"},
		{name: "unknown export", cflags: flagCFixedNewstyle, steps: []step{
			{optGo, infoData("nope"), []string{"err:unknown"}},
			{optInfo, infoData("nope"), []string{"err:unknown"}},
			goDefault,
		}, then: "transmission"},
		{name: "malformed info requests", cflags: flagCFixedNewstyle, steps: []step{
			{optGo, []byte{0, 0}, []string{"err:invalid"}},
			{optGo, append(infoData("disk"), 0), []string{"err:invalid"}},
			{optGo, []byte{0, 0, 0, 9, 'd', 0, 0}, []string{"err:invalid"}},
			{optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0}, []string{"err:invalid"}},
			goDefault,
		}, then: "transmission"},
		{name: "huge option consumed", cflags: flagCFixedNewstyle, steps: []step{
			{99, make([]byte, maxOptionLength+1), []string{"err:toobig"}},
			{optGo, make([]byte, 1<<20), []string{"err:toobig"}},
			goDefault,
		}, then: "transmission"},
		{name: "unknown client flags", cflags: 1 << 7, then: "closed"},
		{name: "unknown export name", cflags: flagCFixedNewstyle,
			raw: optionBytes(optExportName, []byte("nope")), then: "closed"},
		{name: "huge export name", cflags: flagCFixedNewstyle,
			raw: optionBytes(optExportName, make([]byte, maxOptionLength+1)), then: "closed"},
		{name: "bad option magic", cflags: flagCFixedNewstyle,
			raw: bytes.Repeat([]byte{0x55}, 16), then: "closed"},
	}
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize)})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			r.greet(tc.cflags)
			for _, s := range tc.steps {
				r.send(optionBytes(s.opt, s.data))
				var got []string
				for range s.want {
					o := r.readReply()
					if o.opt != s.opt {
						t.Fatalf("reply for option %d, want %d", o.opt, s.opt)
					}
					checkInfo(t, o)
					got = append(got, o.kind())
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("option %d: replies %q, want %q", s.opt, got, s.want)
				}
			}
			if tc.raw != nil {
				r.send(tc.raw)
			}
			switch tc.then {
			case "transmission":
				r.checkTransmission()
			case "closed":
				r.expectClosed()
			}
		})
	}
}

// checkInfo checks the contents of NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE.
func checkInfo(t *testing.T, o optReply) {
	t.Helper()
	if o.typ != repInfo {
		return
	}
	d := o.data
	switch binary.BigEndian.Uint16(d) {
	case infoExport:
		size, flags := binary.BigEndian.Uint64(d[2:10]), binary.BigEndian.Uint16(d[10:12])
		want := flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim | flagSendWriteZeroes | flagCanMultiConn
		if len(d) != 12 || size != testSize || flags != want {
			t.Fatalf("NBD_INFO_EXPORT size %d flags %#x len %d, want %d %#x 12", size, flags, len(d), testSize, want)
		}
	case infoBlockSize:
		mn, pref, mx := binary.BigEndian.Uint32(d[2:6]), binary.BigEndian.Uint32(d[6:10]), binary.BigEndian.Uint32(d[10:14])
		if len(d) != 14 || mn != 1 || pref != 4096 || mx != 32<<20 {
			t.Fatalf("NBD_INFO_BLOCK_SIZE %d/%d/%d len %d", mn, pref, mx, len(d))
		}
	}
}

func TestExportName(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize)})
	for _, tc := range []struct {
		name   string
		cflags uint32
		export string
		zeroes int
	}{
		{"with zeroes", flagCFixedNewstyle, "", 124},
		{"no zeroes", flagCFixedNewstyle | flagCNoZeroes, "disk", 0},
		{"not fixed newstyle", 0, "disk", 124},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			r.greet(tc.cflags)
			r.send(optionBytes(optExportName, []byte(tc.export)))
			b := r.recv(10 + tc.zeroes)
			size, flags := binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint16(b[8:10])
			if size != testSize || flags != transmissionFlags {
				t.Fatalf("size %d flags %#x", size, flags)
			}
			if !bytes.Equal(b[10:], make([]byte, tc.zeroes)) {
				t.Fatal("padding is not zeroes")
			}
			r.checkTransmission()
		})
	}
}

func TestAdmitRefuses(t *testing.T) {
	var secondary atomic.Bool
	secondary.Store(true)
	admit := func() error {
		if secondary.Load() {
			return errors.New("node is Secondary")
		}
		return nil
	}
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize), Admit: admit})

	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	for _, opt := range []uint32{optInfo, optGo} {
		r.send(optionBytes(opt, infoData("disk")))
		o := r.readReply()
		if o.typ != repErrUnknown || !strings.Contains(string(o.data), "Secondary") {
			t.Fatalf("option %d: reply %s %q, want err:unknown carrying the reason", opt, o.kind(), o.data)
		}
	}
	r.send(optionBytes(optList, nil)) // negotiation goes on
	if o := r.readReply(); o.kind() != "server:disk" {
		t.Fatalf("list: %s", o.kind())
	}
	r.readReply()

	r2 := dialRaw(t, addr)
	r2.greet(flagCFixedNewstyle)
	r2.send(optionBytes(optExportName, []byte("disk")))
	r2.expectClosed()

	secondary.Store(false) // promoted
	r.send(optionBytes(optGo, infoData("disk")))
	for range 3 {
		r.readReply()
	}
	r.checkTransmission()
}
