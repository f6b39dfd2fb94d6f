package nbdserver

import (
	"fmt"
	"sync"
)

// MemBackend is a Backend held in memory, for tests, demos and benchmarks.
// Its Sync does nothing: there is nothing to make durable.
type MemBackend struct {
	mu   sync.RWMutex // guards data's contents
	data []byte
}

// NewMemBackend returns a zeroed MemBackend of size bytes.
func NewMemBackend(size int) *MemBackend {
	return &MemBackend{data: make([]byte, size)}
}

// ReadAt implements io.ReaderAt.
func (m *MemBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return copy(p, m.data[off:]), nil
}

// WriteAt implements io.WriterAt.
func (m *MemBackend) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return copy(m.data[off:], p), nil
}

// Size returns the size fixed at creation.
func (m *MemBackend) Size() (int64, error) { return int64(len(m.data)), nil }

// Sync does nothing.
func (m *MemBackend) Sync() error { return nil }

// Trim zeroes the range.
func (m *MemBackend) Trim(off, length int64) error { return m.Zero(off, length, false) }

// Zero zeroes the range.
func (m *MemBackend) Zero(off, length int64, noHole bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, length); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	return nil
}

func (m *MemBackend) check(off, length int64) error {
	if off < 0 || length < 0 || off > int64(len(m.data)) || length > int64(len(m.data))-off {
		return fmt.Errorf("nbdserver: range [%d, +%d) outside memory backend of %d bytes", off, length, len(m.data))
	}
	return nil
}
