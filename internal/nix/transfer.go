package nix

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/nixcell/nixcell/internal/fault"
)

// Moving a closure between hosts: nix-store --export writes store paths
// with their references, nix-store --import adds them to a store. The
// export format carries no signatures, and nix-store --import, run by root
// on a local store, checks none (Nix 2.8, Debian 12's nix-bin: an unsigned
// path is imported although require-sigs = true). So the signatures travel
// beside the closure (PathInfo) and nixcell checks them itself, as
// `nix copy` would, before anything is imported: each path's NAR, hashed
// here, must be the one its signatures sign.

// PathInfo is what Nix knows of a store path.
type PathInfo struct {
	Path string `json:"path"`
	// NarHash is the SHA-256 of the path's NAR serialisation, as Nix
	// prints it ("sha256-BASE64" or "sha256:BASE32").
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver,omitempty"`
	// Signatures are "KEYNAME:BASE64" ed25519 signatures of Fingerprint.
	Signatures []string `json:"signatures,omitempty"`
}

// PathInfos reads what the store knows of paths.
func PathInfos(ctx context.Context, paths []string) ([]PathInfo, error) {
	out, err := run(ctx, nil, "nix", append([]string{"--extra-experimental-features", "nix-command", "path-info", "--json"}, paths...)...)
	if err != nil {
		return nil, err
	}
	var infos []PathInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("reading nix path-info: %w", err)
	}
	return infos, nil
}

// Invalid returns those of paths the store does not hold.
func Invalid(ctx context.Context, paths []string) ([]string, error) {
	out, err := run(ctx, nil, "nix-store", append([]string{"--check-validity", "--print-invalid"}, paths...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// Export writes paths to w as nix-store --export does; they must be a
// closure (every reference among them) for Import to take them.
func Export(ctx context.Context, paths []string, w io.Writer) error {
	return runIO(ctx, nil, w, "nix-store", append([]string{"--export"}, paths...)...)
}

// Import adds the paths of an export to the store, as nix-store --import.
// It checks no signature (see CheckTrust).
func Import(ctx context.Context, r io.Reader) error {
	return runIO(ctx, r, io.Discard, "nix-store", "--import")
}

// runIO runs a Nix command with the given standard input and output; its
// error output is part of the error.
func runIO(ctx context.Context, stdin io.Reader, stdout io.Writer, name string, args ...string) error {
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s is not installed (install Nix, e.g. Debian's nix-bin): %w", name, err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s interrupted: %w", name, ctx.Err())
		}
		return fmt.Errorf("%w: %s %s: %v: %s", ErrNix, name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// TrustPolicy is what the host's Nix requires of paths added to its store
// from elsewhere.
type TrustPolicy struct {
	RequireSigs bool
	// Keys are the trusted public keys, "NAME:BASE64".
	Keys []string
}

// HostTrust reads the host's require-sigs and trusted-public-keys (from
// nix.conf, NIX_CONFIG and the defaults, as Nix itself would).
func HostTrust(ctx context.Context) (TrustPolicy, error) {
	out, err := run(ctx, nil, "nix", "--extra-experimental-features", "nix-command", "show-config", "--json")
	if err != nil {
		return TrustPolicy{}, err
	}
	var cfg map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		return TrustPolicy{}, fmt.Errorf("reading nix show-config: %w", err)
	}
	var p TrustPolicy
	if v, ok := cfg["require-sigs"]; ok {
		if err := json.Unmarshal(v.Value, &p.RequireSigs); err != nil {
			return p, fmt.Errorf("reading require-sigs: %w", err)
		}
	}
	if v, ok := cfg["trusted-public-keys"]; ok {
		if err := json.Unmarshal(v.Value, &p.Keys); err != nil {
			return p, fmt.Errorf("reading trusted-public-keys: %w", err)
		}
	}
	return p, nil
}

// ErrUntrusted is the class of closures the host's Nix would not take.
var ErrUntrusted = fault.New(fault.Invalid, "not signed by a trusted key")

// CheckTrust checks, for each path to be imported, that its NAR is the one
// its PathInfo describes (hash and size, computed from the export) and,
// when the policy requires signatures, that a trusted key signed it.
func (p TrustPolicy) CheckTrust(info PathInfo, exported ExportedPath) error {
	want, err := parseHash(info.NarHash)
	if err != nil {
		return fmt.Errorf("%s: %w", info.Path, err)
	}
	if exported.NarHash != want || exported.NarSize != info.NarSize {
		return fmt.Errorf("%s: its content in the archive is not the one described (NAR hash or size differ)", info.Path)
	}
	if !sameStrings(exported.References, info.References) {
		return fmt.Errorf("%s: its references in the archive are not the ones described", info.Path)
	}
	if !p.RequireSigs {
		return nil
	}
	fp := []byte(Fingerprint(info.Path, exported.NarHash, info.NarSize, info.References))
	for _, sig := range info.Signatures {
		name, b64, ok := strings.Cut(sig, ":")
		if !ok {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != ed25519.SignatureSize {
			continue
		}
		for _, k := range p.Keys {
			kname, kb64, ok := strings.Cut(k, ":")
			if !ok || kname != name {
				continue
			}
			key, err := base64.StdEncoding.DecodeString(kb64)
			if err == nil && len(key) == ed25519.PublicKeySize && ed25519.Verify(key, fp, raw) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s has no signature by a key in trusted-public-keys, and this host's Nix has require-sigs = true", ErrUntrusted, info.Path)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		if seen[s]--; seen[s] < 0 {
			return false
		}
	}
	return true
}

// Fingerprint is what a Nix signature of a store path signs.
func Fingerprint(path string, narHash [32]byte, narSize int64, refs []string) string {
	return "1;" + path + ";sha256:" + base32(narHash[:]) + ";" + strconv.FormatInt(narSize, 10) + ";" + strings.Join(refs, ",")
}

// base32Chars is Nix's base-32 alphabet (no e, o, u, t).
const base32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// base32 encodes as Nix does: least significant bits first, from the end.
func base32(b []byte) string {
	n := (len(b)*8-1)/5 + 1
	out := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		bit := i * 5
		j, k := bit/8, bit%8
		c := b[j] >> k
		if j+1 < len(b) {
			c |= b[j+1] << (8 - k)
		}
		out[n-1-i] = base32Chars[c&0x1f]
	}
	return string(out)
}

func unbase32(s string, size int) ([]byte, error) {
	out := make([]byte, size)
	n := len(s)
	for i := 0; i < n; i++ {
		d := strings.IndexByte(base32Chars, s[n-1-i])
		if d < 0 {
			return nil, fmt.Errorf("bad base-32 digit %q", s[n-1-i])
		}
		bit := i * 5
		j, k := bit/8, bit%8
		if j >= size {
			return nil, errors.New("base-32 string too long")
		}
		out[j] |= byte(d << k)
		if j+1 < size {
			out[j+1] |= byte(d >> (8 - k))
		} else if d>>(8-k) != 0 {
			return nil, errors.New("base-32 string too long")
		}
	}
	return out, nil
}

// parseHash reads a SHA-256 as Nix prints it: "sha256-BASE64" (SRI),
// "sha256:BASE32" or "sha256:HEX".
func parseHash(s string) ([32]byte, error) {
	var h [32]byte
	var raw []byte
	var err error
	switch {
	case strings.HasPrefix(s, "sha256-"):
		raw, err = base64.StdEncoding.DecodeString(s[len("sha256-"):])
	case strings.HasPrefix(s, "sha256:") && len(s) == len("sha256:")+52:
		raw, err = unbase32(s[len("sha256:"):], 32)
	case strings.HasPrefix(s, "sha256:") && len(s) == len("sha256:")+64:
		raw, err = hex.DecodeString(s[len("sha256:"):])
	default:
		err = errors.New("not a SHA-256")
	}
	if err == nil && len(raw) != 32 {
		err = errors.New("not a SHA-256")
	}
	if err != nil {
		return h, fmt.Errorf("hash %q: %w", s, err)
	}
	copy(h[:], raw)
	return h, nil
}

// ExportedPath is one store path of an export, as read from it.
type ExportedPath struct {
	Path       string
	NarHash    [32]byte
	NarSize    int64
	References []string
	Deriver    string
}

// ErrBadExport is the class of exports that cannot be read.
var ErrBadExport = fault.New(fault.Invalid, "not a Nix export")

// exportMagic follows each path's NAR in an export.
const exportMagic = 0x4558494e

// ReadExport reads an export (nix-store --export's format: for each path
// a 1, its NAR, the magic, its path, references and deriver, a 0 for no
// signature; then a 0), hashing each NAR as Nix will when it imports it.
func ReadExport(r io.Reader) ([]ExportedPath, error) {
	x := &exportReader{r: r}
	var paths []ExportedPath
	for {
		more, err := x.int()
		if err != nil {
			return nil, x.fail(err)
		}
		if more == 0 {
			return paths, nil
		}
		if more != 1 {
			return nil, x.fail(errors.New("bad path marker"))
		}
		h := sha256.New()
		x.hash, x.count = h, 0
		if err := x.nar(); err != nil {
			return nil, x.fail(err)
		}
		var p ExportedPath
		copy(p.NarHash[:], h.Sum(nil))
		p.NarSize, x.hash = x.count, nil
		if magic, err := x.int(); err != nil || magic != exportMagic {
			return nil, x.fail(errors.New("bad magic after a NAR"))
		}
		if p.Path, err = x.str(4096); err != nil {
			return nil, x.fail(err)
		}
		n, err := x.int()
		if err != nil || n > 1<<16 {
			return nil, x.fail(errors.New("bad reference count"))
		}
		for i := uint64(0); i < n; i++ {
			ref, err := x.str(4096)
			if err != nil {
				return nil, x.fail(err)
			}
			p.References = append(p.References, ref)
		}
		if p.Deriver, err = x.str(4096); err != nil {
			return nil, x.fail(err)
		}
		if sig, err := x.int(); err != nil || sig != 0 {
			return nil, x.fail(errors.New("a legacy signature, which Nix no longer reads"))
		}
		paths = append(paths, p)
	}
}

type exportReader struct {
	r     io.Reader
	hash  hash.Hash // the NAR being read, nil outside one
	count int64
	buf   [8]byte
}

func (x *exportReader) fail(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %v", ErrBadExport, err)
}

func (x *exportReader) read(b []byte) error {
	if _, err := io.ReadFull(x.r, b); err != nil {
		return err
	}
	if x.hash != nil {
		x.hash.Write(b)
		x.count += int64(len(b))
	}
	return nil
}

func (x *exportReader) int() (uint64, error) {
	if err := x.read(x.buf[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(x.buf[:]), nil
}

// str reads a string of at most limit bytes, padded to 8.
func (x *exportReader) str(limit uint64) (string, error) {
	n, err := x.int()
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", fmt.Errorf("a string of %d bytes where at most %d are expected", n, limit)
	}
	b := make([]byte, (n+7)/8*8)
	if err := x.read(b); err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

// skip reads a string of any length (a file's contents) without keeping it.
func (x *exportReader) skip() error {
	n, err := x.int()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for left := (n + 7) / 8 * 8; left > 0; {
		k := min(left, uint64(len(buf)))
		if err := x.read(buf[:k]); err != nil {
			return err
		}
		left -= k
	}
	return nil
}

func (x *exportReader) expect(tokens ...string) error {
	for _, t := range tokens {
		s, err := x.str(256)
		if err != nil {
			return err
		}
		if s != t {
			return fmt.Errorf("%q where %q belongs in a NAR", s, t)
		}
	}
	return nil
}

func (x *exportReader) nar() error {
	if err := x.expect("nix-archive-1"); err != nil {
		return err
	}
	return x.node(0)
}

func (x *exportReader) node(depth int) error {
	if depth > 256 {
		return errors.New("a NAR nested too deep")
	}
	if err := x.expect("(", "type"); err != nil {
		return err
	}
	t, err := x.str(64)
	if err != nil {
		return err
	}
	switch t {
	case "regular":
		s, err := x.str(64)
		if err != nil {
			return err
		}
		if s == "executable" {
			if err := x.expect(""); err != nil {
				return err
			}
			s, err = x.str(64)
			if err != nil {
				return err
			}
		}
		if s != "contents" {
			return fmt.Errorf("%q where the contents belong in a NAR", s)
		}
		if err := x.skip(); err != nil {
			return err
		}
	case "symlink":
		if err := x.expect("target"); err != nil {
			return err
		}
		if _, err := x.str(4096); err != nil {
			return err
		}
	case "directory":
		for {
			s, err := x.str(64)
			if err != nil {
				return err
			}
			if s == ")" {
				return nil
			}
			if s != "entry" {
				return fmt.Errorf("%q where an entry belongs in a NAR", s)
			}
			if err := x.expect("(", "name"); err != nil {
				return err
			}
			if _, err := x.str(255); err != nil {
				return err
			}
			if err := x.expect("node"); err != nil {
				return err
			}
			if err := x.node(depth + 1); err != nil {
				return err
			}
			if err := x.expect(")"); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown NAR node type %q", t)
	}
	return x.expect(")")
}
