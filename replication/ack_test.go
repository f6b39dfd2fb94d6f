package replication

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestAcksNeverBlockTheCaller fills the connection until the peer's side
// takes nothing more, then has acks sent: sendAcks must return at once
// (the receiver calls it and must keep reading), leave the acks to the
// sender goroutine, and the sender must then deliver them after what was
// already in the connection, in order.
func TestAcksNeverBlockTheCaller(t *testing.T) {
	mine, theirs := tcpPair(t)
	mine.SetWriteBuffer(4096)
	theirs.SetReadBuffer(4096)
	l := newLink(&Resource{}, mine, wire.Hello{})

	// Fill the connection: nobody reads the other end yet.
	filler := make([]byte, 64<<10)
	sent := 0
	for {
		mine.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := mine.Write(filler)
		sent += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mine.SetWriteDeadline(time.Time{})

	l.recvSeq.Store(7)
	l.journaledSeq.Store(5)
	returned := make(chan struct{})
	go func() { l.sendAcks(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("sendAcks blocked on a full connection")
	}
	select {
	case <-l.kick:
	default:
		t.Fatal("acks the connection did not take were not left to the sender")
	}
	if l.snd.bw.Buffered() == 0 {
		t.Fatal("the full connection took the acks: nothing was left to test")
	}
	if l.acksMoved() {
		t.Fatal("acks handed to the sender are counted as not written")
	}

	// The peer reads again; the sender delivers the rest.
	got := make(chan []wire.Ack, 1)
	go func() {
		br := bufio.NewReader(theirs)
		if _, err := io.CopyN(io.Discard, br, int64(sent)); err != nil {
			got <- nil
			return
		}
		r := wire.NewReader(br)
		var acks []wire.Ack
		for len(acks) < 2 {
			f, err := r.Next()
			if err != nil || f.Type != wire.TypeAck {
				break
			}
			a, _ := wire.ParseAck(f.Body)
			acks = append(acks, a)
		}
		got <- acks
	}()
	s := l.claimSender()
	if s == nil {
		t.Fatal("the sender role was left held")
	}
	l.sendQueued(s)
	want := []wire.Ack{{Kind: wire.Received, Seq: 7}, {Kind: wire.Journaled, Seq: 5}}
	select {
	case acks := <-got:
		if len(acks) != len(want) || acks[0] != want[0] || acks[1] != want[1] {
			t.Fatalf("peer read acks %+v, want %+v", acks, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the acks never arrived")
	}
}

// TestAcksGoOutAtOnceWhenTheConnectionTakesThem: with room in the
// connection, sendAcks writes the acks itself and wakes no one.
func TestAcksGoOutAtOnceWhenTheConnectionTakesThem(t *testing.T) {
	mine, theirs := tcpPair(t)
	l := newLink(&Resource{}, mine, wire.Hello{})
	l.recvSeq.Store(3)
	l.journaledSeq.Store(3)
	l.sendAcks()
	select {
	case <-l.kick:
		t.Fatal("the sender goroutine was woken for acks already written")
	default:
	}
	theirs.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(theirs)
	for _, want := range []wire.Ack{{Kind: wire.Received, Seq: 3}, {Kind: wire.Journaled, Seq: 3}} {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		a, err := wire.ParseAck(f.Body)
		if err != nil || a != want {
			t.Fatalf("read %+v (%v), want %+v", a, err, want)
		}
	}
	l.sendAcks() // nothing moved: nothing written, no one woken
	select {
	case <-l.kick:
		t.Fatal("woken with no ack moved")
	default:
	}
}

// TestAckWriteErrorIsLeftToTheSender: a connection the peer reset fails the
// ack write; sendAcks, which may run on the journal's writer, leaves the
// acks and the error to the sender goroutine instead of failing the link
// itself.
func TestAckWriteErrorIsLeftToTheSender(t *testing.T) {
	mine, theirs := tcpPair(t)
	l := newLink(&Resource{}, mine, wire.Hello{})
	theirs.SetLinger(0)
	theirs.Close() // a reset
	buf := make([]byte, 1)
	mine.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := mine.Read(buf); err == nil {
		t.Fatal("read from a reset connection succeeded")
	}
	l.journaledSeq.Store(1)
	l.sendAcks() // an l.fail here would need a whole Resource and panic
	select {
	case <-l.kick:
	default:
		t.Fatal("the failed ack write was not left to the sender")
	}
	if l.snd.bw.Buffered() == 0 {
		t.Fatal("the acks were dropped instead of left to the sender")
	}
	if err := l.snd.bw.Flush(); err == nil {
		t.Fatal("the sender's write to a reset connection succeeded")
	}
}
