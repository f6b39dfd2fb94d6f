package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// applyConfig reads a TOML file of serve's flags, keys named like the
// long flags (name = "r0", etcd = ["http://e1:2379", ...], primary =
// true), and sets each flag the command line did not set: flags given on
// the command line win. A bad line is one error naming the file and line.
func applyConfig(fs *pflag.FlagSet, path string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config: %v", err)
	}
	var values map[string]any
	if _, err := toml.Decode(string(text), &values); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return usagef("--config %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		return usagef("--config %s: %v", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keyLine(text, keys[i]) < keyLine(text, keys[j]) })
	for _, k := range keys {
		if err := setFromConfig(fs, k, values[k]); err != nil {
			return usagef("--config %s: line %d: %s: %v", path, keyLine(text, k), k, err)
		}
	}
	return nil
}

// setFromConfig sets flag k to v unless the command line set it.
func setFromConfig(fs *pflag.FlagSet, k string, v any) error {
	f := fs.Lookup(k)
	if f == nil || k == "config" {
		return fmt.Errorf("not a serve flag")
	}
	if f.Changed {
		return nil
	}
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case bool:
		if f.Value.Type() != "bool" {
			return fmt.Errorf("want a %s, not true or false", f.Value.Type())
		}
		s = fmt.Sprint(v)
	case int64, float64:
		s = fmt.Sprint(v)
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			ps, ok := p.(string)
			if !ok {
				return fmt.Errorf("want a list of strings")
			}
			parts[i] = ps
		}
		s = strings.Join(parts, ",")
	default:
		return fmt.Errorf("want a string, number, boolean or list of strings")
	}
	if f.Value.Type() != "bool" && f.Value.Type() != "string" && s == "" {
		return fmt.Errorf("empty value")
	}
	if err := fs.Set(k, s); err != nil {
		return fmt.Errorf("%q: %v", s, unwrapFlagErr(err))
	}
	return nil
}

// unwrapFlagErr drops pflag's own "invalid argument ... for ... flag" wording.
func unwrapFlagErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// keyLine is the line where key k is set in a TOML text (1 if not found).
func keyLine(text []byte, k string) int {
	re := regexp.MustCompile(`(?m)^[ \t]*"?` + regexp.QuoteMeta(k) + `"?[ \t]*=`)
	loc := re.FindIndex(text)
	if loc == nil {
		return 1
	}
	return 1 + strings.Count(string(text[:loc[0]]), "\n")
}
