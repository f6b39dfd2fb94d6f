// Package tlsdir loads TLS credentials from a directory laid out as nbdkit,
// qemu and libnbd read it (--tls-certificates DIR):
//
//	ca-cert.pem      the CA that signs the peers' certificates
//	server-cert.pem  this server's certificate (chain)
//	server-key.pem   its private key, readable by the owner only
//	client-cert.pem  a client's certificate, for a client that presents one
//	client-key.pem   its private key
//
// Usage:
//
//	cfg, err := tlsdir.Server("/etc/nbdmirror/tls", true) // clients need a certificate from ca-cert.pem
//	cfg, err := tlsdir.Client("/etc/nbdmirror/tls")       // trusts ca-cert.pem, presents client-cert.pem if there
//
// Both prefer TLS 1.3 and accept nothing older than 1.2, which the NBD
// protocol requires implementations to support.
package tlsdir

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names inside the directory.
const (
	CACert     = "ca-cert.pem"
	ServerCert = "server-cert.pem"
	ServerKey  = "server-key.pem"
	ClientCert = "client-cert.pem"
	ClientKey  = "client-key.pem"
)

// Server returns the configuration of a TLS server presenting
// server-cert.pem. With verifyPeer, clients must present a certificate
// signed by ca-cert.pem.
func Server(dir string, verifyPeer bool) (*tls.Config, error) {
	cert, err := keyPair(dir, ServerCert, ServerKey)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if verifyPeer {
		if cfg.ClientCAs, err = caPool(dir); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Client returns the configuration of a TLS client that trusts ca-cert.pem
// and presents client-cert.pem when the directory has one. The caller sets
// ServerName, the name the server's certificate must carry.
func Client(dir string) (*tls.Config, error) {
	pool, err := caPool(dir)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if _, err := os.Stat(filepath.Join(dir, ClientCert)); err == nil {
		cert, err := keyPair(dir, ClientCert, ClientKey)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// keyPair loads a certificate and its key, refusing a key file that others
// than its owner may read.
func keyPair(dir, certFile, keyFile string) (tls.Certificate, error) {
	keyPath := filepath.Join(dir, keyFile)
	if err := CheckPrivate(keyPath); err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsdir: %s: %w", dir, err)
	}
	return cert, nil
}

func caPool(dir string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		return nil, fmt.Errorf("tlsdir: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsdir: %s holds no PEM certificate", filepath.Join(dir, CACert))
	}
	return pool, nil
}

// CheckPrivate refuses a secret file that its group or others may read or
// write, as ssh refuses such a private key.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("tlsdir: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("tlsdir: %s is accessible by group or others (mode %#o): chmod 600 it: %w",
			path, perm, ErrNotPrivate)
	}
	return nil
}

// ErrNotPrivate is wrapped by CheckPrivate's refusal.
var ErrNotPrivate = errors.New("secret file not private")
