package tlspsk

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
)

// Keys maps a PSK identity (the username of nbdkit's PSK file) to its key.
type Keys map[string][]byte

// LoadKeys reads a PSK file, refusing one that group or others may read.
func LoadKeys(path string) (Keys, error) {
	if err := tlsdir.CheckPrivate(path); err != nil {
		return nil, fmt.Errorf("tlspsk: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlspsk: %w", err)
	}
	keys, err := ParseKeys(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("tlspsk: %s: %w", path, err)
	}
	return keys, nil
}

// ParseKeys reads GnuTLS's PSK file format, as nbdkit, qemu and psktool
// use it: one "username:hexkey" a line. Blank lines and lines starting
// with # are skipped.
func ParseKeys(r io.Reader) (Keys, error) {
	keys := Keys{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hexKey, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want username:hexkey", n)
		}
		key, err := hex.DecodeString(strings.TrimSpace(hexKey))
		if err != nil || len(key) == 0 {
			return nil, fmt.Errorf("line %d: user %q: the key is not a hex string", n, name)
		}
		if _, dup := keys[name]; dup {
			return nil, fmt.Errorf("line %d: user %q listed twice", n, name)
		}
		keys[name] = key
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no username:hexkey line")
	}
	return keys, nil
}
