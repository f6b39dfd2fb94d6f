package journal

import "time"

// Stage is a step of the journal's work that Options.Observe times, to
// show where a write's time goes.
type Stage uint8

const (
	StageWrite      Stage = iota // a batch of records written to the segment (one pwritev)
	StageSync                    // one fdatasync of the segment, for every sync and FUA waiting (group commit)
	StageStall                   // an append that waited for space (back-pressure) until a checkpoint freed it
	StageCheckpoint              // a checkpoint: the applier reached it and synced the disk
	StageApply                   // a run of consecutive records applied to the disk (one write)
	StageApplyWait               // the applier held a batch outside the activity set until its journal sync (see activity.go)
)

var stageNames = [...]string{"journal_write", "journal_sync", "journal_stall", "checkpoint", "apply", "apply_wait"}

// String is the stage's name as metrics label it.
func (s Stage) String() string { return stageNames[s] }

// clock is the time a step starts, if steps are observed.
func (j *Journal) clock() time.Time {
	if j.opts.Observe == nil {
		return time.Time{}
	}
	return time.Now()
}

// observe reports a step of stage s that began at t (from clock).
func (j *Journal) observe(s Stage, t time.Time) {
	if o := j.opts.Observe; o != nil && !t.IsZero() {
		o(s, time.Since(t))
	}
}
