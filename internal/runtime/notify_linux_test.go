package runtime

import "testing"

func TestIsReady(t *testing.T) {
	for msg, want := range map[string]bool{
		"READY=1":                          true,
		"STATUS=Startup finished\nREADY=1": true,
		"READY=1\n":                        true,
		"READY=0":                          false,
		"X_READY=1":                        false,
		"STATUS=READY=1":                   false,
		"":                                 false,
	} {
		if got := isReady(msg); got != want {
			t.Errorf("isReady(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/run/a\040b`:  "/run/a b",
		`/plain`:       "/plain",
		`/tab\011x\\y`: "/tab\tx\\\\y",
		`/short\04`:    `/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLabelValue(t *testing.T) {
	labels := []string{"bundle=/x", hostDirLabel + "=/run/nixcell/host/web"}
	if got := labelValue(labels, hostDirLabel); got != "/run/nixcell/host/web" {
		t.Errorf("labelValue = %q", got)
	}
	if got := labelValue(labels, "missing"); got != "" {
		t.Errorf("labelValue(missing) = %q", got)
	}
}
