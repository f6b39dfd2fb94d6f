package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Status is the `status --json` contract: fields may be added, never renamed.
type Status struct {
	Name  string      `json:"name"`
	Role  string      `json:"role"`
	Disk  string      `json:"disk"`
	Size  int64       `json:"size"`
	Peer  PeerStatus  `json:"peer"`
	Stats StatsStatus `json:"stats"`
	// Why this node is StandAlone, when it is.
	StandAlone string      `json:"standalone_reason,omitempty"`
	Protocol   string      `json:"protocol"`
	Gen        wire.GenIDs `json:"generation"`
	// DiskError is the first fault of the disk, journal or metadata since
	// the disk was attached (see diskstate.go); Disk is then Failed or
	// Diskless, unless --on-io-error is pass-on.
	DiskError *DiskError `json:"disk_error,omitempty"`
}

// PeerStatus is the peer as this node sees it.
type PeerStatus struct {
	Connection  string       `json:"connection"`
	Role        string       `json:"role"`
	Disk        string       `json:"disk"`
	Replication string       `json:"replication"`
	Resync      ResyncStatus `json:"resync"`
	// PolledReads: link reads whose frame came while the reader polled
	// (Config.PeerPoll); SleptReads: those it slept for.
	PolledReads uint64 `json:"polled_reads"`
	SleptReads  uint64 `json:"slept_reads"`
	// ReaderSends: the times the link's reader, polling, sent records a
	// writer had left for it.
	ReaderSends uint64 `json:"reader_sends"`
}

// ResyncStatus is the progress of a running resync.
type ResyncStatus struct {
	// Mode is how the source syncs: "journal tail" or "bitmap" (on the
	// source only).
	Mode        string  `json:"mode,omitempty"`
	TotalBytes  int64   `json:"total_bytes"`
	DoneBytes   int64   `json:"done_bytes"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	ETASeconds  float64 `json:"eta_seconds"`
}

// StatsStatus counts what the resource has done since start.
type StatsStatus struct {
	Writes          uint64 `json:"writes"`
	BytesWritten    uint64 `json:"bytes_written"`
	ReplBytesRaw    uint64 `json:"repl_bytes_raw"`
	ReplBytesWire   uint64 `json:"repl_bytes_wire"`
	ResyncBytesWire uint64 `json:"resync_bytes_wire"`
	OutOfSyncBytes  uint64 `json:"out_of_sync_bytes"`
	ReplBytesRecv   uint64 `json:"repl_bytes_received"`
	// Records sent to the peer and not yet acknowledged, and their bytes.
	ReplLagRecords uint64 `json:"repl_lag_records"`
	ReplLagBytes   uint64 `json:"repl_lag_bytes"`
	// Regions of the disk a Secondary dropped from the page cache before
	// a small write (see filedisk.Disk.SetWriteOnly).
	DiskCacheDrops uint64 `json:"disk_cache_drops"`
	// Large writes a resync's target made to its disk with O_DIRECT (see
	// filedisk.Disk.SetDirect).
	DiskDirectWrites uint64 `json:"disk_direct_writes"`
	// Reads the peer served (Config.ReadBalancing).
	ReadRemote uint64 `json:"read_remote"`
	// Writes of --journal-data-max or more journaled whole, not made in
	// place: they overlapped a journaled write the synced disk may lack
	// (see the journal's unsynced.go).
	LargeWritesJournaled uint64 `json:"large_writes_journaled"`
}

// Status reports the node's state.
func (r *Resource) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Name: r.name, Role: r.role.String(), Disk: diskStateName(r.health.load(), r.meta.Disk), Size: r.size,
		StandAlone: r.standAlone, Protocol: string(rune(r.cfg.Protocol)), Gen: r.meta.Gen,
		DiskError: r.health.firstError()}
	st.Peer = PeerStatus{Connection: "Connecting", Role: "Unknown", Disk: "DUnknown", Replication: "Off",
		PolledReads: r.linkPolled.Load(), SleptReads: r.linkSlept.Load(), ReaderSends: r.readerSends.Load()}
	if r.cfg.Peer == "" && r.cfg.PeerListen == "" || r.standAlone != "" {
		st.Peer.Connection = "StandAlone"
	}
	st.Stats = StatsStatus{Writes: r.writes.Load(), BytesWritten: r.bytesWritten.Load(),
		ReplBytesRaw: r.replRaw.Load(), ReplBytesWire: r.replWire.Load(), ResyncBytesWire: r.resyncWire.Load(),
		OutOfSyncBytes: uint64(r.oos.bytes()), ReplBytesRecv: r.replRecv.Load(),
		DiskCacheDrops: r.cacheDrops(), DiskDirectWrites: r.directWrites(), ReadRemote: r.bal.remoteDone.Load()}
	if !r.health.out() { // an attach replaces the journal while the disk is out
		st.Stats.LargeWritesJournaled = r.journal.OverlapJournaled()
	}
	if l := r.link; l != nil {
		st.Peer.Connection, st.Peer.Role = "Connected", r.peer.Role.String()
		st.Peer.Disk, st.Peer.Replication = r.peer.Disk.String(), "Established"
		st.Stats.ReplBytesRaw += l.bytesRaw.Load()
		st.Stats.ReplBytesWire += l.bytesWire.Load()
		switch {
		case r.resync.source && r.resync.tail && !r.resync.inPlace:
			st.Peer.Replication, st.Peer.Disk = "SyncSource", wire.Consistent.String()
		case r.resync.source:
			st.Peer.Replication, st.Peer.Disk = "SyncSource", wire.Inconsistent.String()
		case r.resync.target:
			st.Peer.Replication = "SyncTarget"
		case st.Stats.OutOfSyncBytes > 0 && st.Peer.Disk == wire.UpToDate.String():
			// Regions the peer may not hold as this node does (a write that
			// failed here after the peer took it, or one verify found): the
			// next resync carries them.
			st.Peer.Disk = wire.Inconsistent.String()
		}
		if r.resync.source || r.resync.target {
			st.Peer.Resync = r.resync.progress()
		}
		if r.resync.source {
			st.Peer.Resync.Mode = wire.SyncBitmap.String()
			if r.resync.tail {
				st.Peer.Resync.Mode = wire.SyncTail.String()
			}
		}
		st.Stats.ReplLagRecords, st.Stats.ReplLagBytes = l.lag()
	}
	if plant.On(plant.PeerAlwaysUpToDate) {
		st.Peer.Disk = wire.UpToDate.String()
	}
	return st
}

func (s resyncState) progress() ResyncStatus { return s.progressAt(time.Now()) }

// ErrRefused is a control command this node will not carry out now.
var ErrRefused = errors.New("replication: refused")

// SetRole promotes or demotes this node. Promotion needs an UpToDate disk
// (force overrides) and a peer that is not Primary; the peer learns the new
// role when the link is made again.
func (r *Resource) SetRole(role wire.Role, force bool) error {
	// A Secondary acknowledges records once journaled, before they reach
	// its disk; a Primary reads its disk. Most of the wait is here, outside
	// the locks; what a dying link delivered meanwhile is waited for below.
	var asked bool
	if role == wire.Primary {
		var err error
		if asked, err = r.askPrimary(force); err != nil {
			return err
		}
		if err := r.journal.WaitApplied(); err != nil {
			r.retract(asked)
			return err
		}
	}
	r.order.Lock() // no write is between its journal append and its send
	r.mu.Lock()
	old := r.role
	var ev Event = Demote{}
	if role == wire.Primary {
		ev = Promote{Force: force, NewID: randomID()}
	}
	acts, err := r.stepLocked(ev)
	if d, ok := has[Deny](acts); ok {
		err = fmt.Errorf("%w: %s", ErrRefused, d.Text)
	}
	if err == nil && len(acts) > 0 && role == wire.Primary {
		err = r.journal.WaitApplied()
	}
	if err != nil || len(acts) == 0 { // refused, failed, or the role already
		r.role = old
		r.mu.Unlock()
		r.order.Unlock()
		r.retract(asked && err != nil)
		return err
	}
	r.setDiskRole(role)
	l := r.link
	r.mu.Unlock()
	r.order.Unlock()
	if _, ok := has[FlushWrites](acts); ok {
		if err := r.Sync(); err != nil {
			return err
		}
	}
	r.log.Info("role changed", "role", role.String())
	if _, ok := has[Reconnect](acts); ok && l != nil {
		l.close() // reconnects at once, announcing the new role
	}
	return nil
}

// Disconnect drops the link and stays StandAlone until Connect.
func (r *Resource) Disconnect() {
	r.mu.Lock()
	acts, _ := r.stepLocked(CmdDisconnect{}) // saves nothing
	l := r.link
	r.mu.Unlock()
	if _, ok := has[CloseLink](acts); ok && l != nil {
		l.close()
	}
}

// Connect leaves StandAlone: the node connects to its peer again.
func (r *Resource) Connect() {
	r.mu.Lock()
	r.stepLocked(CmdConnect{}) // saves nothing
	r.mu.Unlock()
}

// DiscardMyData gives up this node's data at the next connection, when a
// split brain or unrelated data would otherwise keep the nodes apart: this
// node becomes the SyncTarget of a full sync. It is refused on a Primary.
func (r *Resource) DiscardMyData() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	acts, err := r.stepLocked(CmdDiscard{})
	if d, ok := has[Deny](acts); ok {
		return fmt.Errorf("%w: %s", ErrRefused, d.Text)
	}
	if err != nil {
		return err
	}
	r.log.Warn("this node will discard its data and take the peer's at the next connection")
	return nil
}
