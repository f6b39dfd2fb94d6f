// Package tlstest makes throwaway X.509 certificates for tests and the
// bench: a CA (ECDSA P-256, valid for a day), and server, client and peer
// certificates it signs, written as the files internal/tlsdir (and nbdkit,
// qemu, libnbd) read.
//
//	ca := tlstest.NewCA(t, "test CA")
//	dir := ca.Dir(t)              // ca-cert.pem, server-*.pem for 127.0.0.1 and localhost, client-*.pem
//	cdir := ca.ClientDir(t, nil)  // ca-cert.pem, client-*.pem: what a client reads
//	err := ca.WritePeerDir(d, "127.0.0.1", "node-a") // a peer link's --peer-tls-certificates
//	cert, err := ca.IssuePeer("node-b")              // a tls.Certificate for both ends
//
// The functions without a testing.TB (New, IssuePEM, WriteDir, ...) return
// errors instead.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

// CA is a certificate authority valid for a day.
type CA struct {
	// ServerIPs are addresses server certificates are valid for besides
	// 127.0.0.1 and ::1 (a test guest's view of the host, say).
	ServerIPs []net.IP

	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// New makes a self-signed CA called name.
func New(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, der: der, key: key}, nil
}

// NewCA is New for a test.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// IssuePEM returns a certificate for name and its key, both PEM: a server
// certificate valid for 127.0.0.1, ::1 and localhost, or a client one.
func (ca *CA) IssuePEM(name string, server bool) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ca.ServerIPs...)
	}
	return ca.issue(tmpl)
}

// IssuePeerPEM returns a certificate and its key, both PEM, good for both
// ends of a connection (server and client auth), as each node of a peer
// link is: valid for names (DNS names or IP addresses), the first of them
// also its common name.
func (ca *CA) IssuePeerPEM(names ...string) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tmpl)
}

// IssuePeer is IssuePeerPEM as a tls.Certificate.
func (ca *CA) IssuePeer(names ...string) (tls.Certificate, error) {
	c, k, err := ca.IssuePeerPEM(names...)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(c, k)
}

// issue signs tmpl, given its names and uses, with a fresh key.
func (ca *CA) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Issue is IssuePEM for a test.
func (ca *CA) Issue(t testing.TB, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := ca.IssuePEM(name, server)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// CertPEM is the CA's certificate.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// WriteDir writes into dir the CA's certificate and a server and a client
// certificate it signed, keys mode 0600.
func (ca *CA) WriteDir(dir string) error {
	sc, sk, err := ca.IssuePEM("nbdmirror test server", true)
	if err != nil {
		return err
	}
	cc, ck, err := ca.IssuePEM("nbdmirror test client", false)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{
		{"ca-cert.pem", ca.CertPEM(), 0o644},
		{"server-cert.pem", sc, 0o644}, {"server-key.pem", sk, 0o600},
		{"client-cert.pem", cc, 0o644}, {"client-key.pem", ck, 0o600},
	})
}

// WritePeerDir fills dir (made if missing, mode 0700) as a peer link's
// --peer-tls-certificates reads it: ca-cert.pem, and server-cert.pem with
// server-key.pem (mode 0600) from IssuePeerPEM(names...).
func (ca *CA) WritePeerDir(dir string, names ...string) error {
	c, k, err := ca.IssuePeerPEM(names...)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return writeFiles(dir, []file{{"ca-cert.pem", ca.CertPEM(), 0o644},
		{"server-cert.pem", c, 0o644}, {"server-key.pem", k, 0o600}})
}

// Dir is WriteDir into a fresh directory of the test, whose path it returns.
func (ca *CA) Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// WriteClientDir writes into dir what a client reads (libnbd, qemu): the
// certificate of trust (nil: ca) as ca-cert.pem, and a client certificate
// ca signed with its key, mode keyMode.
func (ca *CA) WriteClientDir(dir string, trust *CA, keyMode os.FileMode) error {
	if trust == nil {
		trust = ca
	}
	cc, ck, err := ca.IssuePEM("nbdmirror test client", false)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{{"ca-cert.pem", trust.CertPEM(), 0o644},
		{"client-cert.pem", cc, 0o644}, {"client-key.pem", ck, keyMode}})
}

// ClientDir is WriteClientDir into a fresh directory of the test (key mode
// 0600), whose path it returns.
func (ca *CA) ClientDir(t testing.TB, trust *CA) string {
	t.Helper()
	dir := t.TempDir()
	if err := ca.WriteClientDir(dir, trust, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// CADir writes a directory holding only ca's certificate: a client that
// trusts the server but has no certificate of its own.
func (ca *CA) CADir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := writeFiles(dir, []file{{"ca-cert.pem", ca.CertPEM(), 0o644}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

type file struct {
	name string
	data []byte
	mode os.FileMode
}

func writeFiles(dir string, files []file) error {
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	return n
}
