package cell

import (
	"regexp"
	"strings"
	"testing"
)

// TestTagShaped holds tagShaped to the regular expression it replaces.
func TestTagShaped(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	tags := []string{"", "a", "A", "0", "v1.2", "pre-update_3", ".hidden", "-x", "_x", "a b", "a/b", "é", "aé",
		"a\n", strings.Repeat("a", 64), strings.Repeat("a", 65), "a" + strings.Repeat(".", 63), "a" + strings.Repeat(".", 64)}
	for c := 0; c < 256; c++ {
		tags = append(tags, string(rune(c)), "a"+string(rune(c)))
	}
	for _, tag := range tags {
		if got, want := tagShaped(tag), pattern.MatchString(tag); got != want {
			t.Errorf("tagShaped(%q) = %v, the pattern says %v", tag, got, want)
		}
	}
}

func FuzzTagShaped(f *testing.F) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	f.Add("v1.2")
	f.Add(strings.Repeat("a", 64))
	f.Fuzz(func(t *testing.T, tag string) {
		if got, want := tagShaped(tag), pattern.MatchString(tag); got != want {
			t.Errorf("tagShaped(%q) = %v, the pattern says %v", tag, got, want)
		}
	})
}
