package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"strconv"
	"strings"
)

// labelKey labels every goroutine a run starts (pprof labels are inherited
// by the goroutines a goroutine starts), so runs going on side by side can
// each count their own.
const labelKey = "nbdmirror-sim"

// labelled runs f with the goroutine label of run seed.
func labelled(seed uint64, f func()) {
	pprof.Do(context.Background(), pprof.Labels(labelKey, strconv.FormatUint(seed, 10)), func(context.Context) { f() })
}

// countGoroutines counts the live goroutines labelled with run seed.
func countGoroutines(seed uint64) int {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return -1
	}
	want := fmt.Sprintf("%q:%q", labelKey, strconv.FormatUint(seed, 10))
	n, count := 0, 0
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "@" {
			count, _ = strconv.Atoi(f[0])
			continue
		}
		if strings.HasPrefix(line, "# labels:") && strings.Contains(line, want) {
			n += count
		}
	}
	return n
}

// seedStacks is the stacks of the live goroutines labelled with run seed,
// alike ones counted together, for a leak's report: runs going on side by
// side would bury them in stacks.
func seedStacks(seed uint64) string {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return err.Error()
	}
	want := fmt.Sprintf("%q:%q", labelKey, strconv.FormatUint(seed, 10))
	var keep []string
	for _, rec := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(rec, want) {
			keep = append(keep, rec)
		}
	}
	s := strings.Join(keep, "\n\n")
	if len(s) > 16000 {
		s = s[:16000] + "\n..."
	}
	return s
}
