package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"

	"github.com/nbdmirror/nbdmirror/internal/filedisk"
)

// `nbdmirror disk detach` takes the disk out on command, as a fault would
// (--on-io-error detach): the node is Diskless. `nbdmirror disk attach
// [--disk PATH]` puts a disk back on a Diskless Secondary: the one that
// was detached (no --disk, or its path), resynced by bitmap as its
// generation ids say, or a replacement (another path; created at the
// device's size when missing), which is Inconsistent until a full sync
// from the peer, checksums first, makes it UpToDate.

// diskAttachRequest is the body of POST /disk/attach.
type diskAttachRequest struct {
	Disk string `json:"disk,omitempty"` // empty: the disk that was detached
}

func runDisk(args []string, stdout io.Writer) error {
	fs, control, name := controlFlags("disk")
	path := fs.String("disk", "", "with attach: the file or block device to attach (default: the one detached); another path is a new disk, fully synced")
	c, err := parseClient(fs, control, name, args, stdout, "disk detach | attach [--disk PATH] [--control PATH]")
	if err != nil {
		return err
	}
	var route string
	var body any
	switch {
	case fs.NArg() == 1 && fs.Arg(0) == "detach" && *path == "":
		route = "/disk/detach"
	case fs.NArg() == 1 && fs.Arg(0) == "attach":
		route = "/disk/attach"
		if *path != "" {
			abs, err := filepath.Abs(*path) // the daemon runs elsewhere
			if err != nil {
				return usagef("--disk: %v", err)
			}
			*path = abs
		}
		body = diskAttachRequest{Disk: *path}
	default:
		return usagef("want detach, or attach [--disk PATH]")
	}
	var st Status
	if err := c.post(route, body, &st); err != nil {
		return err
	}
	printStatus(stdout, st)
	return nil
}

func (d *daemon) handleDiskDetach(w http.ResponseWriter, r *http.Request) {
	d.diskMu.Lock()
	err := d.res.DetachDisk()
	d.diskMu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d.status())
}

func (d *daemon) handleDiskAttach(w http.ResponseWriter, r *http.Request) {
	var req diskAttachRequest
	if err := jsonBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := d.attachDisk(req.Disk); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d.status())
}

// attachDisk opens path (empty: the detached disk's) and attaches it.
func (d *daemon) attachDisk(path string) error {
	d.diskMu.Lock()
	defer d.diskMu.Unlock()
	if path == "" {
		path = d.cfg.disk
	}
	exists, _, err := filedisk.Stat(path)
	if err != nil {
		return fmt.Errorf("disk attach: %w", err)
	}
	fresh := attachFresh(d.cfg.disk, path, exists)
	disk, err := filedisk.Open(path, d.size())
	if err != nil {
		return fmt.Errorf("disk attach: %w", err)
	}
	if err := d.res.AttachDisk(disk, fresh); err != nil {
		disk.Close()
		return err
	}
	d.disk.Close() // the resource no longer uses it
	d.disk, d.cfg.disk = disk, path
	d.log.Info("disk attached", "disk", path, "fresh", fresh)
	return nil
}

// attachFresh says whether a disk to attach is a new one, to be fully
// synced: another path than the detached disk's, or a file made for it.
// The detached disk itself is resynced as its generation ids say.
func attachFresh(detached, path string, exists bool) bool {
	return !exists || filepath.Clean(detached) != filepath.Clean(path)
}
