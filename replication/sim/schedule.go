package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Kind is what a step does.
type Kind uint8

const (
	Write       Kind = iota + 1 // a write to the Primary, waited for
	WriteAsync                  // a write not waited for: later ones may overlap it
	Flush                       // FLUSH on the Primary
	Trim                        // TRIM on the Primary
	Crash                       // a node's process dies: what the kernel had survives
	PowerLoss                   // a node, or both, lose power: unsynced data is gone, but what write-back kept
	LinkReset                   // the live connections are reset
	LinkCut                     // no connection either way until the next LinkHeal
	LinkHeal                    // every link fault is cleared
	LinkDelay                   // one direction delivers late
	LinkHole                    // one direction loses what is written (partition one way)
	DiskFail                    // a node's disk fails its writes until the next DiskHeal
	DiskHeal                    // disk faults are cleared
	JournalFail                 // a node's journal file system fails its writes
	Switchover                  // the Primary is demoted and its peer promoted
	SplitBrain                  // cut, promote the Secondary, write on it, demote the old Primary
	Disconnect                  // a node goes StandAlone
	Connect                     // a node leaves StandAlone
	Discard                     // the Secondary will discard its data at the next connection
	Pause                       // time passes
	Promote                     // the Secondary is promoted while connected: must be refused
)

var kindNames = [...]string{"?", "write", "write-async", "flush", "trim", "crash", "power-loss",
	"link-reset", "link-cut", "link-heal", "link-delay", "link-hole", "disk-fail", "disk-heal",
	"journal-fail", "switchover", "split-brain", "disconnect", "connect", "discard", "pause", "promote"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// kindNamed is the kind whose String is name.
func kindNamed(name string) (Kind, bool) {
	for k := Write; int(k) < len(kindNames); k++ {
		if k.String() == name {
			return k, true
		}
	}
	return 0, false
}

// Step is one event of a schedule.
type Step struct {
	Kind  Kind
	Node  int           // 0 or 1: which node (faults), or from which side (one-way faults)
	Block int           // first block (writes, trims)
	N     int           // blocks
	FUA   bool          // writes
	Delay time.Duration // LinkDelay, Pause
	// PowerLoss: Both nodes lose power at once; Keep seeds which unsynced
	// disk blocks the kernel's write-back had put on the disk.
	Both bool
	Keep uint64
}

func (s Step) String() string {
	switch s.Kind {
	case Write, WriteAsync, Trim:
		f := ""
		if s.FUA {
			f = " fua"
		}
		return fmt.Sprintf("%s %d+%d%s", s.Kind, s.Block, s.N, f)
	case LinkDelay, Pause:
		return fmt.Sprintf("%s %s %v", s.Kind, nodeName(s.Node), s.Delay)
	case PowerLoss:
		if s.Both {
			return fmt.Sprintf("%s a+b", s.Kind)
		}
	case Flush, LinkReset, LinkCut, LinkHeal, DiskHeal, Switchover, SplitBrain, Promote:
		return s.Kind.String()
	}
	return fmt.Sprintf("%s %s", s.Kind, nodeName(s.Node))
}

func nodeName(i int) string { return string(rune('a' + i)) }

// Schedule is a seeded run: its settings and its steps.
type Schedule struct {
	Seed   uint64
	Blocks int
	Steps  []Step
}

func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d blocks:", s.Seed, s.Blocks)
	for _, st := range s.Steps {
		b.WriteString(" " + st.String() + ";")
	}
	return b.String()
}

// weights say how often each kind is drawn. Kinds left out (weight 0) are
// never drawn: see Generate's skip.
var weights = map[Kind]int{
	Write: 30, WriteAsync: 30, Flush: 6, Trim: 4, Crash: 3, PowerLoss: 2, LinkReset: 4, LinkCut: 2,
	LinkHeal: 3, LinkDelay: 3, LinkHole: 2, DiskFail: 1, DiskHeal: 2, JournalFail: 1, Switchover: 3,
	SplitBrain: 1, Disconnect: 2, Connect: 3, Discard: 1, Pause: 4, Promote: 1,
}

// Generate draws the schedule of seed: steps whose kind skip does not
// hold. It is a pure function of its arguments.
func Generate(seed uint64, skip map[Kind]bool) Schedule {
	rnd := rand.New(rand.NewPCG(seed, seed^0x5eed))
	s := Schedule{Seed: seed, Blocks: 16 + rnd.IntN(3)*16}
	var kinds []Kind
	total := 0
	for k := Write; k <= Promote; k++ {
		if !skip[k] {
			kinds = append(kinds, k)
			total += weights[k]
		}
	}
	n := 8 + rnd.IntN(12)
	for range n {
		x := rnd.IntN(total)
		k := kinds[0]
		for _, c := range kinds {
			if x < weights[c] {
				k = c
				break
			}
			x -= weights[c]
		}
		s.Steps = append(s.Steps, drawStep(rnd, k, s.Blocks))
	}
	return s
}

// drawStep fills in a step of kind k.
func drawStep(rnd *rand.Rand, k Kind, blocks int) Step {
	st := Step{Kind: k, Node: rnd.IntN(2)}
	switch k {
	case Write, WriteAsync, Trim:
		st.N = 1 + rnd.IntN(4)
		st.Block = rnd.IntN(blocks - st.N + 1)
		st.FUA = k != Trim && rnd.IntN(5) == 0
	case LinkDelay:
		st.Delay = time.Duration(1+rnd.IntN(150)) * time.Millisecond
	case Pause:
		st.Delay = time.Duration(1+rnd.IntN(100)) * time.Millisecond
	case PowerLoss:
		st.Both, st.Keep = rnd.IntN(3) == 0, rnd.Uint64()
	}
	return st
}
