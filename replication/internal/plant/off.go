//go:build !simbugs

package plant

// On reports whether b is planted: never, without the simbugs tag.
func On(Bug) bool { return false }
