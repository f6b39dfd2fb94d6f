package bufpool

import "testing"

func TestClassesCoverEverySize(t *testing.T) {
	for _, n := range []int{1, 4096, 4097, 6 << 10, 1 << 20, 1<<20 + 30, 3 << 19, 5 << 20} {
		bp := Get(n)
		if len(*bp) != n {
			t.Fatalf("Get(%d): len %d", n, len(*bp))
		}
		if c := cap(*bp); c < n || c > n*3/2+4096 {
			t.Errorf("Get(%d): cap %d, want at least n and at most a half more", n, c)
		}
		Put(bp)
	}
}

func TestPutKeepsOnlyItsOwnBuffers(t *testing.T) {
	foreign := make([]byte, 5000) // no class has this capacity
	Put(&foreign)
	for range 100 {
		if bp := Get(4097); cap(*bp) == 5000 {
			t.Fatal("a buffer Put did not come from Get was lent again")
		}
	}
}
