package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/pflag"
)

// Status is the `status --json` contract: fields may be added, never renamed.
type Status struct {
	Name  string      `json:"name"`
	Role  string      `json:"role"`
	Disk  string      `json:"disk"`
	Size  int64       `json:"size"`
	Peer  PeerStatus  `json:"peer"`
	Stats StatsStatus `json:"stats"`
	NBD   NBDStatus   `json:"nbd"`
}

// PeerStatus is the peer as this node sees it.
type PeerStatus struct {
	Connection  string       `json:"connection"`
	Role        string       `json:"role"`
	Disk        string       `json:"disk"`
	Replication string       `json:"replication"`
	Resync      ResyncStatus `json:"resync"`
}

// ResyncStatus is the progress of a running resync.
type ResyncStatus struct {
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
}

func (d *daemon) status() Status {
	st := d.nbd.Stats()
	rs := d.res.Stats()
	return Status{
		Name: d.cfg.name,
		Role: d.role(),
		Disk: "UpToDate",
		Size: d.size(),
		Peer: PeerStatus{Connection: "StandAlone", Role: "Unknown", Disk: "DUnknown", Replication: "Off"},
		Stats: StatsStatus{
			Writes:       rs.Writes,
			BytesWritten: rs.BytesWritten,
		},
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
		},
	}
}

func runStatus(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	control := fs.String("control", "", "control socket of the daemon (default /run/nbdmirror/NAME.sock)")
	name := fs.String("name", "r0", "resource name, for the default --control")
	asJSON := fs.Bool("json", false, "print the machine-readable status")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: nbdmirror status [--json] [--control PATH]\n\n%s", fs.FlagUsages())
			return errHelp
		}
		return usageError{err}
	}
	if *control == "" {
		*control = filepath.Join("/run/nbdmirror", *name+".sock")
	}
	var st Status
	if err := newControlClient(*control).get("/status", &st); err != nil {
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
	fmt.Fprintf(w, "  disk:%s size:%d\n", st.Disk, st.Size)
	p := st.Peer
	if p.Connection == "StandAlone" && p.Replication == "Off" && p.Disk == "DUnknown" {
		fmt.Fprintf(w, "  peer connection:StandAlone\n")
	} else {
		fmt.Fprintf(w, "  peer connection:%s role:%s\n", p.Connection, p.Role)
		fmt.Fprintf(w, "    replication:%s peer-disk:%s\n", p.Replication, p.Disk)
	}
	fmt.Fprintf(w, "  nbd %s connections:%d reads:%d writes:%d flushes:%d trims:%d zeroes:%d errors:%d\n",
		st.NBD.Listen, st.NBD.Connections, st.NBD.Reads, st.NBD.Writes, st.NBD.Flushes, st.NBD.Trims, st.NBD.Zeroes, st.NBD.Errors)
}
