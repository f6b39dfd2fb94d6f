package replication

import (
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
)

// The stages of a write a Resource times when Config.ObserveStage is set,
// beside the journal's own steps (journal.Stage: journal_write,
// journal_sync, journal_stall, checkpoint, apply, apply_wait), so that
// metrics show where a write's time goes.
const (
	// stageJournal: a write's submission until its record is written in
	// the journal's segment: waiting for the writer (and for space), the
	// write, and with FUA the sync.
	stageJournal = "journal"
	// stagePeer: a write's submission until the peer's ack that its
	// protocol asks for: the link's queue, the round trip, the peer's
	// journal.
	stagePeer = "peer"
	// stageFlush: a FLUSH, until the journal synced here and the peer
	// acknowledged its barrier.
	stageFlush = "flush"
)

// journalObserver passes the journal's steps on to Config.ObserveStage.
func (c *Config) journalObserver() func(journal.Stage, time.Duration) {
	obs := c.ObserveStage
	if obs == nil {
		return nil
	}
	return func(s journal.Stage, d time.Duration) { obs(s.String(), d) }
}

// observeSince reports a step of stage that began at start.
func (r *Resource) observeSince(stage string, start time.Time) {
	if obs := r.cfg.ObserveStage; obs != nil {
		obs(stage, time.Since(start))
	}
}
