package main

import "testing"

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true}, {"512M", 512 << 20, true}, {"1G", 1 << 30, true},
		{"10GiB", 10 << 30, true}, {"1gb", 1e9, true}, {"1.5K", 1536, true}, {"2T", 2 << 40, true},
		{"", 0, false}, {"G", 0, false}, {"1X", 0, false}, {"-1G", 0, false}, {"0.1", 0, false},
		{"9999999T", 0, false},
	} {
		got, err := parseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}
