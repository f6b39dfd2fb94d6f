package replication

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// RegionSize is the size of the disk covered by one bit of the out-of-sync
// bitmap: a 4 KiB write marks 4 KiB, so a resync moves what changed and
// little more. The bitmap costs 32 KiB of memory per GiB of disk.
const RegionSize = 4 << 10

// maxRun is the most regions one resync record carries.
const maxRun = 256

// bitmap marks the regions of the disk that the peer may not hold as this
// node does. Its methods are safe for concurrent use.
type bitmap struct {
	size int64 // bytes of the disk

	mu    sync.Mutex // guards words and count
	words []uint64
	count int // bits set
}

func newBitmap(size int64) *bitmap {
	regions := (size + RegionSize - 1) / RegionSize
	return &bitmap{size: size, words: make([]uint64, (regions+63)/64)}
}

// mark sets the bits of every region [off, off+length) touches.
func (b *bitmap) mark(off, length int64) {
	if length <= 0 {
		return
	}
	first, last := off/RegionSize, (off+length-1)/RegionSize
	b.mu.Lock()
	for r := first; r <= last; r++ {
		w, m := r/64, uint64(1)<<(r%64)
		if b.words[w]&m == 0 {
			b.words[w] |= m
			b.count++
		}
	}
	b.mu.Unlock()
}

// clear unsets region r's bit.
func (b *bitmap) clear(r int64) {
	b.mu.Lock()
	w, m := r/64, uint64(1)<<(r%64)
	if b.words[w]&m != 0 {
		b.words[w] &^= m
		b.count--
	}
	b.mu.Unlock()
}

// next returns the first set region at or after r, or -1.
func (b *bitmap) next(r int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := r / 64; w < int64(len(b.words)); w++ {
		word := b.words[w]
		if w == r/64 {
			word &^= (uint64(1) << (r % 64)) - 1
		}
		if word != 0 {
			return w*64 + int64(bits.TrailingZeros64(word))
		}
	}
	return -1
}

// bytes is how much of the disk is marked.
func (b *bitmap) bytes() int64 {
	b.mu.Lock()
	n := int64(b.count) * RegionSize
	b.mu.Unlock()
	if last := (b.size - 1) / RegionSize; n > 0 && b.isSet(last) {
		n -= (last+1)*RegionSize - b.size // the last region is short
	}
	return n
}

func (b *bitmap) isSet(r int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.words[r/64]&(uint64(1)<<(r%64)) != 0
}

// run counts the set regions from r on, up to max, stopping at a clear one.
func (b *bitmap) run(r, max int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	regions := (b.size + RegionSize - 1) / RegionSize
	n := int64(0)
	for ; n < max && r+n < regions && b.words[(r+n)/64]&(uint64(1)<<((r+n)%64)) != 0; n++ {
	}
	return n
}

// regionLen is the length of region r (the last one may be short).
func (b *bitmap) regionLen(r int64) int64 {
	return min(RegionSize, b.size-r*RegionSize)
}

// chunkWords is the most bitmap words one BitmapChunk frame carries.
const chunkWords = 32 << 10

// chunks encodes the parts of the bitmap with bits set as BitmapChunk
// frames.
func (b *bitmap) chunks() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var frames [][]byte
	for start := 0; start < len(b.words); start += chunkWords {
		words := b.words[start:min(start+chunkWords, len(b.words))]
		if !slices.ContainsFunc(words, func(w uint64) bool { return w != 0 }) {
			continue
		}
		f, _ := wire.AppendBitmapChunk(nil, wire.BitmapChunk{First: uint64(start), Words: words})
		frames = append(frames, f)
	}
	return frames
}

// merge ORs a BitmapChunk body into the bitmap.
func (b *bitmap) merge(body []byte) error {
	c, err := wire.ParseBitmapChunk(body)
	if err != nil {
		return err
	}
	start, n := c.First, uint64(len(c.Words))
	b.mu.Lock()
	defer b.mu.Unlock()
	if start > uint64(len(b.words)) || n > uint64(len(b.words))-start {
		return fmt.Errorf("bitmap chunk of words [%d, +%d) past %d words", start, n, len(b.words))
	}
	for i, w := range c.Words {
		old := b.words[start+uint64(i)]
		b.words[start+uint64(i)] = old | w
		b.count += bits.OnesCount64(w &^ old)
	}
	return nil
}

// subtract clears every bit set in o (a bitmap of the same size).
func (b *bitmap) subtract(o *bitmap) {
	words := o.snapshot()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, w := range words {
		b.count -= bits.OnesCount64(b.words[i] & w)
		b.words[i] &^= w
	}
}

// reset clears every bit.
func (b *bitmap) reset() {
	b.mu.Lock()
	clear(b.words)
	b.count = 0
	b.mu.Unlock()
}

// snapshot copies the words.
func (b *bitmap) snapshot() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.words)
}

// load ORs saved words in.
func (b *bitmap) load(words []uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range min(len(words), len(b.words)) {
		b.count += bits.OnesCount64(words[i] &^ b.words[i])
		b.words[i] |= words[i]
	}
}
