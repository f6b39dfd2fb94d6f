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
	"path/filepath"
	"time"
)

// controlServer is the daemon's HTTP+JSON API on a Unix socket. It listens
// on a temporary name first and is renamed into place by publish, so the
// socket's path exists only once the daemon is ready.
type controlServer struct {
	path string
	tmp  string
	ln   net.Listener
	http *http.Server
	made string // the socket directory, if this daemon created it
}

func listenControl(path string, d *daemon) (*controlServer, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by a running daemon", path)
	}
	dir := filepath.Dir(path)
	cs := &controlServer{path: path, tmp: fmt.Sprintf("%s.%d.tmp", path, os.Getpid())}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cs.made = dir
	}
	os.Remove(cs.tmp)
	ln, err := net.Listen("unix", cs.tmp)
	if err != nil {
		cs.removeDir()
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	cs.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.status())
	})
	mux.HandleFunc("POST /role", d.handleRole)
	mux.HandleFunc("POST /resolve", d.handleResolve)
	mux.HandleFunc("POST /verify", d.handleVerify)
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

// publish starts serving and moves the socket to its public path.
func (cs *controlServer) publish() error {
	go cs.http.Serve(cs.ln)
	if err := os.Rename(cs.tmp, cs.path); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cs.http.Shutdown(ctx)
}

func (cs *controlServer) removeDir() {
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
