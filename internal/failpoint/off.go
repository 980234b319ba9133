//go:build !failpoints

package failpoint

// Hit marks the step name; without the failpoints build tag it does
// nothing and costs nothing.
func Hit(name string) error { return nil }
