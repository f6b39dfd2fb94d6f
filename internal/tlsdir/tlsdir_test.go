package tlsdir_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

func TestLoad(t *testing.T) {
	dir := tlstest.NewCA(t, "CA").Dir(t)
	srv, err := tlsdir.Server(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert || srv.ClientCAs == nil || len(srv.Certificates) != 1 {
		t.Fatalf("server config %+v", srv)
	}
	if srv, err = tlsdir.Server(dir, false); err != nil || srv.ClientAuth != tls.NoClientCert {
		t.Fatalf("without verify-peer: %v %v", srv.ClientAuth, err)
	}
	cl, err := tlsdir.Client(dir)
	if err != nil || cl.RootCAs == nil || len(cl.Certificates) != 1 {
		t.Fatalf("client config: %v", err)
	}
	os.Remove(filepath.Join(dir, tlsdir.ClientCert))
	if cl, err = tlsdir.Client(dir); err != nil || len(cl.Certificates) != 0 {
		t.Fatalf("client without certificate: %v", err)
	}
}

func TestKeyReadableByOthersRefused(t *testing.T) {
	dir := tlstest.NewCA(t, "CA").Dir(t)
	os.Chmod(filepath.Join(dir, tlsdir.ServerKey), 0o640)
	_, err := tlsdir.Server(dir, false)
	if !errors.Is(err, tlsdir.ErrNotPrivate) {
		t.Fatalf("group-readable key: %v", err)
	}
}

func TestMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsdir.Server(dir, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := tlsdir.Client(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
}
