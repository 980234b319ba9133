package runtime

import (
	"bytes"
	"testing"
)

func TestCRLF(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"a\r\nb\r\n"}, "a\nb\n"},
		{[]string{"a\r\r\nb"}, "a\nb"},
		{[]string{"a\r", "\nb"}, "a\nb"},
		{[]string{"progress 1\rprogress 2\r\n"}, "progress 1\rprogress 2\n"},
		{[]string{"a\r", "b"}, "a\rb"},
		{[]string{"\n\n"}, "\n\n"},
	} {
		var out bytes.Buffer
		w := &crlf{w: &out}
		for _, s := range c.in {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", s, n, err)
			}
		}
		if out.String() != c.want {
			t.Errorf("%q: got %q, want %q", c.in, out.String(), c.want)
		}
	}
}
