// Package tlstest makes throwaway X.509 certificates for tests: a CA, and
// server and client certificates it signs, written as the files
// internal/tlsdir (and nbdkit, qemu, libnbd) read.
//
//	ca := tlstest.NewCA(t, "test CA")
//	dir := ca.Dir(t) // ca-cert.pem, server-*.pem for 127.0.0.1 and localhost, client-*.pem
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that lives as long as a test.
type CA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA called name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{cert: cert, der: der, key: key}
}

// Issue returns a certificate for name and its key, both PEM: a server
// certificate valid for 127.0.0.1, ::1 and localhost, or a client one.
func (ca *CA) Issue(t testing.TB, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// CertPEM is the CA's certificate.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// Dir writes a fresh directory with the CA's certificate and a server and
// a client certificate it signed, keys mode 0600, and returns its path.
func (ca *CA) Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	sc, sk := ca.Issue(t, "nbdmirror test server", true)
	cc, ck := ca.Issue(t, "nbdmirror test client", false)
	writeFiles(t, dir, []file{
		{"ca-cert.pem", ca.CertPEM(), 0o644},
		{"server-cert.pem", sc, 0o644}, {"server-key.pem", sk, 0o600},
		{"client-cert.pem", cc, 0o644}, {"client-key.pem", ck, 0o600},
	})
	return dir
}

// ClientDir writes a directory for a client (as libnbd and qemu read it):
// the certificate of trust (nil: ca) as ca-cert.pem, and a client
// certificate ca signed with its key. It returns its path.
func (ca *CA) ClientDir(t testing.TB, trust *CA) string {
	t.Helper()
	if trust == nil {
		trust = ca
	}
	dir := t.TempDir()
	cc, ck := ca.Issue(t, "nbdmirror test client", false)
	writeFiles(t, dir, []file{{"ca-cert.pem", trust.CertPEM(), 0o644},
		{"client-cert.pem", cc, 0o644}, {"client-key.pem", ck, 0o600}})
	return dir
}

// CADir writes a directory holding only ca's certificate: a client that
// trusts the server but has no certificate of its own.
func (ca *CA) CADir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, []file{{"ca-cert.pem", ca.CertPEM(), 0o644}})
	return dir
}

type file struct {
	name string
	data []byte
	mode os.FileMode
}

func writeFiles(t testing.TB, dir string, files []file) {
	t.Helper()
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
