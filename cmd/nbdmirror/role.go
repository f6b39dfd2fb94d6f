package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/nbdmirror/nbdmirror/coordinator"
	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// roleRequest is the body of POST /role.
type roleRequest struct {
	Role  string `json:"role"`
	Force bool   `json:"force"`
}

func (d *daemon) handleRole(w http.ResponseWriter, r *http.Request) {
	var req roleRequest
	if err := jsonBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	role := map[string]wire.Role{"primary": wire.Primary, "secondary": wire.Secondary}[req.Role]
	if role == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("role %q: want primary or secondary", req.Role)})
		return
	}
	if err := d.setRole(r.Context(), role, req.Force); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d.status())
}

// controlFlags are the flags every client subcommand takes.
func controlFlags(name string) (*pflag.FlagSet, *string, *string) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	control := fs.String("control", "", "control socket of the daemon (default /run/nbdmirror/NAME.sock)")
	res := fs.String("name", "r0", "resource name, for the default --control")
	return fs, control, res
}

// parseFlags parses a subcommand's flags; --help prints its usage.
func parseFlags(fs *pflag.FlagSet, args []string, stdout io.Writer, usage string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: nbdmirror %s\n\n%s", usage, fs.FlagUsages())
			return errHelp
		}
		return usageError{err}
	}
	return nil
}

// parseClient parses a client subcommand's flags and returns its client.
func parseClient(fs *pflag.FlagSet, control, name *string, args []string, stdout io.Writer, usage string) (*controlClient, error) {
	if err := parseFlags(fs, args, stdout, usage); err != nil {
		return nil, err
	}
	if *control == "" {
		*control = filepath.Join("/run/nbdmirror", *name+".sock")
	}
	return newControlClient(*control), nil
}

func runRole(args []string, stdout io.Writer) error {
	fs, control, name := controlFlags("role")
	force := fs.Bool("force", false, "promote a disk that is not UpToDate")
	c, err := parseClient(fs, control, name, args, stdout, "role primary|secondary [--force] [--control PATH]")
	if err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "primary" && fs.Arg(0) != "secondary") {
		return usagef("want one argument: primary or secondary")
	}
	var st Status
	if err := c.post("/role", roleRequest{Role: fs.Arg(0), Force: *force}, &st); err != nil {
		return err
	}
	printStatus(stdout, st)
	return nil
}

// runLinkCommand makes connect and disconnect.
func runLinkCommand(route string) func([]string, io.Writer) error {
	return func(args []string, stdout io.Writer) error {
		fs, control, name := controlFlags(route)
		c, err := parseClient(fs, control, name, args, stdout, route+" [--control PATH]")
		if err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return usagef("unexpected argument %q", fs.Arg(0))
		}
		var st Status
		if err := c.post("/"+route, nil, &st); err != nil {
			return err
		}
		printStatus(stdout, st)
		return nil
	}
}

// resolveRequest is the body of POST /resolve.
type resolveRequest struct {
	DiscardMyData bool `json:"discard_my_data"`
}

func (d *daemon) handleResolve(w http.ResponseWriter, r *http.Request) {
	var req resolveRequest
	if err := jsonBody(r, &req); err != nil || !req.DiscardMyData {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "resolve needs discard_my_data"})
		return
	}
	if err := d.res.DiscardMyData(); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d.status())
}

func runResolve(args []string, stdout io.Writer) error {
	fs, control, name := controlFlags("resolve")
	discard := fs.Bool("discard-my-data", false, "give up this node's data: it becomes the SyncTarget of its peer")
	c, err := parseClient(fs, control, name, args, stdout, "resolve --discard-my-data [--control PATH]")
	if err != nil {
		return err
	}
	if !*discard || fs.NArg() != 0 {
		return usagef("resolve needs --discard-my-data (run it on the node whose data is to be given up)")
	}
	var st Status
	if err := c.post("/resolve", resolveRequest{DiscardMyData: true}, &st); err != nil {
		return err
	}
	printStatus(stdout, st)
	return nil
}

// setRole changes the node's role. Demotion with NBD clients connected is
// refused unless forced; forced, new clients are refused at once and the
// connected ones are disconnected once their in-flight requests complete.
func (d *daemon) setRole(ctx context.Context, role wire.Role, force bool) error {
	if handled, err := d.coordRole(ctx, role, force); handled {
		return err
	}
	return d.setRoleLocal(ctx, role, force)
}

// setRoleLocal is setRole without the election's say.
func (d *daemon) setRoleLocal(ctx context.Context, role wire.Role, force bool) error {
	if role == wire.Secondary && d.res.Role() == wire.Primary {
		if n := d.nbd.Connections(); n > 0 && !force {
			return fmt.Errorf("%w: %d NBD client(s) connected; --force disconnects them", replication.ErrRefused, n)
		}
		d.demoting.Store(true)
		defer d.demoting.Store(false)
		if err := d.nbd.CloseClients(ctx); err != nil {
			return err
		}
	}
	return d.res.SetRole(role, force)
}

func (d *daemon) handleVerify(w http.ResponseWriter, r *http.Request) {
	res, err := d.res.Verify()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func runVerify(args []string, stdout io.Writer) error {
	fs, control, name := controlFlags("verify")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	c, err := parseClient(fs, control, name, args, stdout, "verify [--json] [--control PATH]")
	if err != nil {
		return err
	}
	var res replication.VerifyResult
	if err := c.post("/verify", nil, &res); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "verified %s: %s differ", humanBytes(res.CheckedBytes), humanBytes(res.DifferentBytes))
	if res.DifferentBytes > 0 {
		fmt.Fprint(stdout, " (marked out of sync: disconnect and connect to resync them)")
	}
	fmt.Fprintln(stdout)
	return nil
}

// writeError answers a command the daemon refused (409) or failed at (500).
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, replication.ErrRefused) || errors.Is(err, coordinator.ErrRefused) {
		code = http.StatusConflict
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
