package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize reads a byte count such as 4096, 512M, 1G, 10GiB or 1.5T. K, M,
// G, T and their KiB forms are powers of 1024; KB, MB, GB and TB are powers
// of 1000, as coreutils' truncate reads them.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult, ok := sizeUnits[strings.ToUpper(unit)]
	if num == "" || !ok {
		return 0, fmt.Errorf("bad size %q (want e.g. 512M, 1G, 10GiB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 512M, 1G, 10GiB)", s)
	}
	bytes := v * float64(mult)
	if bytes >= 1<<63 || bytes != float64(int64(bytes)) {
		return 0, fmt.Errorf("bad size %q: not a whole number of bytes below 8 EiB", s)
	}
	return int64(bytes), nil
}

var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "KIB": 1 << 10, "KB": 1e3,
	"M": 1 << 20, "MIB": 1 << 20, "MB": 1e6,
	"G": 1 << 30, "GIB": 1 << 30, "GB": 1e9,
	"T": 1 << 40, "TIB": 1 << 40, "TB": 1e12,
}
