package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// TestServeSurvivesBadClients sends the running daemon out-of-range and
// oversize requests and raw garbage while a second client keeps doing I/O.
func TestServeSurvivesBadClients(t *testing.T) {
	n := newNode(t, "16M")
	n.start()
	good, bad := dialNode(t, n), dialNode(t, n)
	size := good.Size()

	buf := make([]byte, 4096)
	if _, err := bad.ReadAt(buf, size-1024); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read past the end: %v, want EINVAL", err)
	}
	if _, err := bad.WriteAt(buf, size, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past the end: %v, want ENOSPC", err)
	}
	if _, err := bad.WriteAt(make([]byte, 33<<20), 0, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("oversize write: %v, want EINVAL", err)
	}
	if _, err := bad.ReadAt(buf, 0); err != nil {
		t.Fatalf("the refused client's next read: %v", err)
	}

	for i := range 3 {
		c, err := net.Dial("tcp", n.nbd)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		if i == 0 {
			copy(junk, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(junk)
		c.Read(make([]byte, 4096)) // the greeting, then the close
		c.Close()

		want := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if _, err := good.WriteAt(want, int64(i)*4096, nbdclient.FlagFUA); err != nil {
			t.Fatalf("the good client's write after garbage: %v", err)
		}
		if _, err := good.ReadAt(buf, int64(i)*4096); err != nil || !bytes.Equal(buf, want) {
			t.Fatalf("the good client's read after garbage: %v", err)
		}
	}
	if st := n.status(); st.Role != "Primary" || st.NBD.Errors < 3 {
		t.Fatalf("status after bad clients: %+v", st)
	}
}
