package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{syscall.EPERM, errnoPerm},
		{&os.PathError{Op: "pwrite", Path: "d", Err: syscall.ENOSPC}, errnoNoSpc},
		{fmt.Errorf("journal: %w", syscall.EDQUOT), errnoNoSpc},
		{syscall.EFBIG, errnoNoSpc},
		{syscall.EINVAL, errnoInval},
		{syscall.ENOMEM, errnoNoMem},
		{syscall.EOVERFLOW, errnoOverflow},
		{syscall.ESHUTDOWN, errnoShutdown},
		{syscall.EBADF, errnoIO},
		{io.ErrUnexpectedEOF, errnoIO},
		{errors.New("peer gone"), errnoIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	rl := rateLimiter{interval: time.Second}
	t0 := time.Unix(1000, 0)
	if ok, _ := rl.allow(t0); !ok {
		t.Fatal("first line held back")
	}
	for i := range 5 {
		if ok, _ := rl.allow(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			t.Fatal("line let through within the interval")
		}
	}
	if ok, n := rl.allow(t0.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("after the interval: ok %v, suppressed %d, want true 5", ok, n)
	}
}

func TestPayloadPool(t *testing.T) {
	for _, n := range []int{1, 4096, 4097, 65536, 1 << 20, maxBlockSize} {
		p := getPayload(n)
		if len(*p) != n || cap(*p) < n || cap(*p) > 2*n+4096 {
			t.Fatalf("getPayload(%d): len %d cap %d", n, len(*p), cap(*p))
		}
		putPayload(p)
	}
	b := make([]byte, 5000) // not a pool size: dropped, not pooled
	putPayload(&b)
}
