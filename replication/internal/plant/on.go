//go:build simbugs

package plant

import "sync/atomic"

var planted atomic.Uint32

// Set plants exactly bugs (0: none).
func Set(bugs Bug) { planted.Store(uint32(bugs)) }

// On reports whether b is planted.
func On(b Bug) bool { return planted.Load()&uint32(b) != 0 }
