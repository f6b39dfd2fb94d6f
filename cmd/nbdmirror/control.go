package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// controlServer is the daemon's HTTP+JSON API on a Unix socket. It listens
// on a temporary name first and is renamed into place by publish, so the
// socket's path exists only once the daemon is ready.
//
// Whoever may connect to the socket controls the resource, so its mode does
// not follow the umask: it is 0600, or 0660 for --control-group. It is
// created in a private directory (0700) next to its path and given its mode
// there, so no one can connect while its mode is still the umask's.
type controlServer struct {
	path   string
	tmpDir string // private directory of tmp
	tmp    string
	ln     net.Listener
	http   *http.Server
	made   string // the socket directory, if this daemon created it
}

func listenControl(path, group string, d *daemon) (*controlServer, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by a running daemon", path)
	}
	gid, err := lookupGroup(group)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	cs := &controlServer{path: path}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cs.made = dir
	}
	if cs.tmpDir, err = os.MkdirTemp(dir, "."+filepath.Base(path)+".tmp"); err != nil {
		cs.removeDir()
		return nil, err
	}
	cs.tmp = filepath.Join(cs.tmpDir, "control.sock")
	if cs.ln, err = listenPrivate(cs.tmp, gid); err != nil {
		cs.removeDir()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.status())
	})
	mux.HandleFunc("POST /role", d.handleRole)
	mux.HandleFunc("POST /resolve", d.handleResolve)
	mux.HandleFunc("POST /verify", d.handleVerify)
	mux.HandleFunc("POST /disk/detach", d.handleDiskDetach)
	mux.HandleFunc("POST /disk/attach", d.handleDiskAttach)
	mux.HandleFunc("POST /connect", func(w http.ResponseWriter, r *http.Request) {
		d.res.Connect()
		writeJSON(w, http.StatusOK, d.status())
	})
	mux.HandleFunc("POST /disconnect", func(w http.ResponseWriter, r *http.Request) {
		d.res.Disconnect()
		writeJSON(w, http.StatusOK, d.status())
	})
	cs.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return cs, nil
}

// lookupGroup returns the id of group, or -1 for "".
func lookupGroup(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("--control-group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// listenPrivate listens on a Unix socket at path with mode 0600, or 0660
// and group gid if gid is not -1.
func listenPrivate(path string, gid int) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	mode := os.FileMode(0o600)
	if gid != -1 {
		mode = 0o660
		err = os.Chown(path, -1, gid)
	}
	if err == nil {
		err = os.Chmod(path, mode)
	}
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	return ln, nil
}

// publish starts serving and moves the socket to its public path.
func (cs *controlServer) publish() error {
	go cs.http.Serve(cs.ln)
	if err := os.Rename(cs.tmp, cs.path); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	os.Remove(cs.tmpDir)
	return nil
}

// abort undoes listenControl when the daemon fails to start.
func (cs *controlServer) abort() {
	cs.ln.Close()
	os.Remove(cs.tmp)
	cs.removeDir()
}

// close stops the API and removes the socket.
func (cs *controlServer) close() {
	os.Remove(cs.path)
	os.Remove(cs.tmp)
	os.Remove(cs.tmpDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cs.http.Shutdown(ctx)
}

func (cs *controlServer) removeDir() {
	if cs.tmpDir != "" {
		os.Remove(cs.tmpDir)
	}
	if cs.made != "" {
		os.Remove(cs.made)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// controlClient talks to a daemon's control socket.
type controlClient struct {
	path string
	http *http.Client
}

func newControlClient(path string) *controlClient {
	return &controlClient{path: path, http: &http.Client{
		Timeout: 10 * time.Minute, // verify reads the whole disk
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *controlClient) get(route string, v any) error {
	return c.do(http.MethodGet, route, nil, v)
}

func (c *controlClient) post(route string, body, v any) error {
	return c.do(http.MethodPost, route, body, v)
}

func (c *controlClient) do(method, route string, body, v any) error {
	var payload io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		payload = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, "http://nbdmirror"+route, payload)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("no daemon answers on %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return errors.New(e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// jsonBody decodes a request's JSON body into v, refusing unknown fields.
func jsonBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
