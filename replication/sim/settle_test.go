package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
)

// TestUnanswered: a request to a crashed incarnation that is answered a
// moment after the check began (its WriteAsync call ran late, on its own
// goroutine, and failed on the closed Resource) is no leak; one never
// answered is, once the grace has passed.
func TestUnanswered(t *testing.T) {
	r := &runner{res: &Result{}, opt: Options{Liveness: time.Second},
		inflight: map[*op]struct{}{}, opsIdle: make(chan struct{})}
	dead := &node{inc: &incarnation{}}
	dead.inc.dead.Store(true)

	late := r.begin("write-async 2+4", dead, nil)
	time.AfterFunc(50*time.Millisecond, func() { r.end(late, journal.ErrClosed) })
	if left := r.unanswered(time.Now().Add(10 * time.Second)); len(left) != 0 {
		t.Fatalf("a request answered 50 ms after the check began is reported left: %v", left)
	}

	r.begin("write-async 8+3", dead, nil)
	left := r.unanswered(time.Now().Add(100 * time.Millisecond))
	if len(left) != 1 || !strings.Contains(left[0], "write-async 8+3") {
		t.Fatalf("left = %v, want the request never answered", left)
	}
	if len(r.res.Violations) != 0 {
		t.Fatalf("violations: %v", r.res.Violations)
	}
}
