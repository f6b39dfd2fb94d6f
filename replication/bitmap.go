package replication

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// RegionSize is the size of the disk covered by one bit of the out-of-sync
// bitmap: a 4 KiB write marks 4 KiB, so a resync moves what changed and
// little more. The bitmap costs 32 KiB of memory per GiB of disk.
const RegionSize = 4 << 10

// bitmap marks the regions of the disk that the peer may not hold as this
// node does. Its methods are safe for concurrent use.
type bitmap struct {
	size int64 // bytes of the disk

	mu    sync.Mutex // guards words, count and dirty
	words []uint64
	count int // bits set
	// dirty has a bit per page of the bitmap file (pageWords words) whose
	// words changed since the last takeDirty or takeAll.
	dirty []uint64

	// watch, when set, makes mark tell marked (never blocking) that it
	// set bits: the Resource watches for marks while its link is
	// established and no resync runs (see markLoop).
	watch  atomic.Bool
	marked chan struct{}
}

func newBitmap(size int64) *bitmap {
	regions := (size + RegionSize - 1) / RegionSize
	words := (regions + 63) / 64
	pages := (words + pageWords - 1) / pageWords
	return &bitmap{size: size, words: make([]uint64, words), dirty: make([]uint64, (pages+63)/64),
		marked: make(chan struct{}, 1)}
}

// touch notes that word w changed. Requires b.mu.
func (b *bitmap) touch(w int64) {
	p := w / pageWords
	b.dirty[p/64] |= 1 << (p % 64)
}

// mark sets the bits of every region [off, off+length) touches.
func (b *bitmap) mark(off, length int64) {
	if b.markQuietly(off, length) && b.watch.Load() {
		select {
		case b.marked <- struct{}{}:
		default:
		}
	}
}

// markQuietly is mark without telling marked (verify's marks wait for the
// operator's resync, as DRBD's do). It reports whether it set bits.
func (b *bitmap) markQuietly(off, length int64) bool {
	if length <= 0 {
		return false
	}
	first, last := off/RegionSize, (off+length-1)/RegionSize
	set := false
	b.mu.Lock()
	for r := first; r <= last; r++ {
		w, m := r/64, uint64(1)<<(r%64)
		if b.words[w]&m == 0 {
			b.words[w] |= m
			b.count++
			b.touch(w)
			set = true
		}
	}
	b.mu.Unlock()
	return set
}

// clear unsets region r's bit.
func (b *bitmap) clear(r int64) {
	b.mu.Lock()
	w, m := r/64, uint64(1)<<(r%64)
	if b.words[w]&m != 0 {
		b.words[w] &^= m
		b.count--
		b.touch(w)
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

// chunks encodes the parts of the bitmap with bits set as BitmapChunk
// frames.
func (b *bitmap) chunks() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var frames [][]byte
	for start := 0; start < len(b.words); start += tune.chunkWords {
		words := b.words[start:min(start+tune.chunkWords, len(b.words))]
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
		if w&^old != 0 {
			b.words[start+uint64(i)] = old | w
			b.count += bits.OnesCount64(w &^ old)
			b.touch(int64(start) + int64(i))
		}
	}
	return nil
}

// subtract clears every bit set in o (a bitmap of the same size).
func (b *bitmap) subtract(o *bitmap) {
	words := o.snapshot()
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, w := range words {
		if b.words[i]&w != 0 {
			b.count -= bits.OnesCount64(b.words[i] & w)
			b.words[i] &^= w
			b.touch(int64(i))
		}
	}
}

// reset clears every bit.
func (b *bitmap) reset() {
	b.mu.Lock()
	for i, w := range b.words {
		if w != 0 {
			b.touch(int64(i))
		}
	}
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

// loadAt ORs saved words in, the first at word index first; words past
// the end of the bitmap are ignored.
func (b *bitmap) loadAt(first int, words []uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	regions := (b.size + RegionSize - 1) / RegionSize
	for i, w := range words[:max(0, min(len(words), len(b.words)-first))] {
		if int64(first+i) == regions/64 {
			w &= 1<<(regions%64) - 1 // no bits past the last region
		}
		if old := b.words[first+i]; w&^old != 0 {
			b.count += bits.OnesCount64(w &^ old)
			b.words[first+i] = old | w
			b.touch(int64(first + i))
		}
	}
}

// markWords sets every bit of the n words from first on that stands for
// a region of the disk.
func (b *bitmap) markWords(first, n int) {
	off := int64(first) * 64 * RegionSize
	if off < b.size {
		b.mark(off, min(int64(n)*64*RegionSize, b.size-off))
	}
}

// takeDirty returns the pages of words that changed since the last take,
// each with a copy of its words, and forgets that they changed.
func (b *bitmap) takeDirty() []bitmapPage {
	b.mu.Lock()
	defer b.mu.Unlock()
	var pages []bitmapPage
	for i, d := range b.dirty {
		for ; d != 0; d &= d - 1 {
			p := i*64 + bits.TrailingZeros64(d)
			words := b.words[p*pageWords : min((p+1)*pageWords, len(b.words))]
			pages = append(pages, bitmapPage{index: p, words: slices.Clone(words)})
		}
		b.dirty[i] = 0
	}
	return pages
}

// takeAll copies the words and forgets which pages changed.
func (b *bitmap) takeAll() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.dirty)
	return slices.Clone(b.words)
}
