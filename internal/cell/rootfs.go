package cell

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/nixcell/nixcell/internal/state"
)

// checkRootFS checks a --rootfs directory and its init at create, and
// returns the directory as an absolute path.
func checkRootFS(dir, init string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	// Kept without symbolic links: every start opens it without following
	// any (see hostfs).
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("root file system %s: %w", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("root file system %s is not a directory", dir)
	}
	if abs == "/" {
		return "", fmt.Errorf("the host's own root cannot be a container's root file system")
	}
	if !path.IsAbs(init) {
		return "", fmt.Errorf("init %q must be an absolute path inside %s", init, dir)
	}
	resolved, err := resolveIn(abs, init)
	if err == nil {
		fi, err = os.Stat(resolved)
	}
	if err != nil {
		return "", fmt.Errorf("init %s not found in %s (give the init with --init PATH, a path inside it)", init, dir)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("init %s in %s is not an executable file", init, dir)
	}
	return abs, nil
}

// initIsSystemd tells whether the init of a plain root resolves to a
// systemd, which reports READY=1 when it has booted.
func initIsSystemd(root, init string) bool {
	p, err := resolveIn(root, init)
	return err == nil && filepath.Base(p) == "systemd"
}

// resolveIn resolves the symbolic links of p, a path inside the directory
// tree root, as the container will see them: absolute links are relative
// to root, and nothing resolves outside it. It returns a host path.
func resolveIn(root, p string) (string, error) {
	const maxLinks = 40
	links := 0
	done := "/"
	rest := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = "/"
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	return filepath.Join(root, done), nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return formatUUID(b), nil
}

// uuidOf is the container's UUID: the one made at create, or, for a
// record written before nixcell kept one, one derived from its name and
// creation time, so it is the same at every start.
func uuidOf(rec *state.Container) string {
	if rec.UUID != "" {
		return rec.UUID
	}
	sum := sha256.Sum256([]byte(rec.Name + "\x00" + rec.CreatedAt.String()))
	var b [16]byte
	copy(b[:], sum[:])
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
