package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nbdmirror/nbdmirror/coordinator"
	"github.com/nbdmirror/nbdmirror/replication"
)

// Status is the `status --json` contract: the resource's state, and the
// export's request counters under "nbd". Fields may be added, never renamed.
type Status struct {
	replication.Status
	NBD NBDStatus `json:"nbd"`
	// Coordinator is the election in etcd, with --etcd.
	Coordinator *coordinator.Status `json:"coordinator,omitempty"`
}

// NBDStatus counts the export's requests by kind.
type NBDStatus struct {
	Listen      string `json:"listen"`
	Connections int    `json:"connections"`
	Reads       uint64 `json:"reads"`
	Writes      uint64 `json:"writes"`
	FUAWrites   uint64 `json:"fua_writes"`
	Flushes     uint64 `json:"flushes"`
	Trims       uint64 `json:"trims"`
	Zeroes      uint64 `json:"zeroes"`
	Errors      uint64 `json:"errors"`
	// PolledReads: socket reads whose request came while the reader polled
	// (--nbd-poll); SleptReads: those it slept for.
	PolledReads uint64 `json:"polled_reads"`
	SleptReads  uint64 `json:"slept_reads"`
	// TLSConnections: connections that completed STARTTLS;
	// RefusedConnections: those closed at once at --max-connections.
	TLSConnections     uint64 `json:"tls_connections"`
	RefusedConnections uint64 `json:"refused_connections"`
}

func (d *daemon) status() Status {
	s := d.baseStatus()
	if d.coord != nil {
		c := d.coord.Status()
		s.Coordinator = &c
		if c.Outdated && s.Disk == "UpToDate" {
			s.Disk = "Outdated" // etcd records it: the peer went on without it
		}
	}
	return s
}

func (d *daemon) baseStatus() Status {
	st := d.nbd.Stats()
	return Status{
		Status: d.res.Status(),
		NBD: NBDStatus{
			Listen:      d.nbdLn.Addr().String(),
			Connections: d.nbd.Connections(),
			Reads:       st.Reads,
			Writes:      st.Writes,
			FUAWrites:   st.FUAWrites,
			Flushes:     st.Flushes,
			Trims:       st.Trims,
			Zeroes:      st.Zeroes,
			Errors:      st.Errors,
			PolledReads: st.PolledReads,
			SleptReads:  st.SleptReads,

			TLSConnections:     st.TLSConnections,
			RefusedConnections: st.RefusedConnections,
		},
	}
}

func runStatus(args []string, stdout io.Writer) error {
	fs, control, name := controlFlags("status")
	asJSON := fs.Bool("json", false, "print the machine-readable status")
	watch := fs.Bool("watch", false, "keep printing; a running resync shows as a progress bar with rate and ETA")
	interval := fs.Duration("interval", time.Second, "how often --watch asks")
	c, err := parseClient(fs, control, name, args, stdout, "status [--json] [--watch] [--control PATH]")
	if err != nil {
		return err
	}
	if *watch {
		return watchStatus(c, stdout, *interval)
	}
	var st Status
	if err := c.get("/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

// printStatus writes the status the way drbdadm status does.
func printStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "%s role:%s\n", st.Name, st.Role)
	fmt.Fprintf(w, "  disk:%s size:%s\n", st.Disk, humanBytes(st.Size))
	if e := st.DiskError; e != nil {
		fmt.Fprintf(w, "    disk-error: %s at %s: %s\n", e.Operation, e.Time.Format(time.RFC3339), e.Error)
	}
	p := st.Peer
	fmt.Fprintf(w, "  peer connection:%s", p.Connection)
	if p.Connection == "Connected" {
		fmt.Fprintf(w, " role:%s", p.Role)
	}
	if st.StandAlone != "" {
		fmt.Fprintf(w, " (%s)", st.StandAlone)
	}
	fmt.Fprintln(w)
	if p.Connection == "Connected" {
		fmt.Fprintf(w, "    replication:%s peer-disk:%s protocol:%s\n", p.Replication, p.Disk, st.Protocol)
	}
	if r := p.Resync; r.TotalBytes > 0 {
		fmt.Fprintf(w, "        done:%.1f%% (%s of %s) %s/s eta:%.0fs\n", 100*float64(r.DoneBytes)/float64(r.TotalBytes),
			humanBytes(r.DoneBytes), humanBytes(r.TotalBytes), humanBytes(int64(r.BytesPerSec)), r.ETASeconds)
	}
	if st.Stats.OutOfSyncBytes > 0 {
		fmt.Fprintf(w, "    out-of-sync:%s\n", humanBytes(int64(st.Stats.OutOfSyncBytes)))
	}
	if c := st.Coordinator; c != nil {
		fmt.Fprintf(w, "  coordinator holder:%s lease:%.1fs/%.0fs peer-outdated:%v suspended:%v etcd:%s\n",
			orNone(c.Holder), c.LeaseRemaining, c.LeaseTTL, c.PeerOutdated, c.Suspended, c.Etcd)
	}
	fmt.Fprintf(w, "  nbd %s connections:%d reads:%d writes:%d flushes:%d trims:%d zeroes:%d errors:%d read-remote:%d\n",
		st.NBD.Listen, st.NBD.Connections, st.NBD.Reads, st.NBD.Writes, st.NBD.Flushes, st.NBD.Trims, st.NBD.Zeroes, st.NBD.Errors,
		st.Stats.ReadRemote)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// humanBytes prints a byte count with a binary unit.
func humanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f%ciB", v, units[i])
}
