package cell

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/archive"
	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/treecopy"
	"github.com/nixcell/nixcell/internal/undo"
)

// rereadable is an archive that can be read twice: a regular file as it
// is, a stream through an unnamed temporary file (O_TMPFILE), which the
// kernel frees whenever this process ends.
type rereadable struct {
	file  *os.File // the file, or the temporary copy
	in    io.Reader
	spool bool
}

func (m *Manager) rereadable(in io.Reader) (*rereadable, error) {
	if f, ok := in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if _, err := f.Seek(0, io.SeekStart); err == nil {
				return &rereadable{file: f, in: f}, nil
			}
		}
	}
	fd, err := unix.Open(m.Store.Root, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("making a temporary file in %s for the archive: %w", m.Store.Root, err)
	}
	f := os.NewFile(uintptr(fd), "archive")
	return &rereadable{file: f, in: io.TeeReader(in, f), spool: true}, nil
}

func (r *rereadable) first() io.Reader { return r.in }

func (r *rereadable) second() (io.Reader, error) {
	if _, err := r.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return r.file, nil
}

func (r *rereadable) Close() {
	if r.spool {
		r.file.Close()
	}
}

// countingReader reports how many bytes passed.
type countingReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// checkArchive reads the whole archive once, changing nothing, and checks
// everything that can be checked before the import begins.
func (m *Manager) checkArchive(ctx context.Context, in io.Reader, req ImportRequest) (_ checked, retErr error) {
	var chk checked
	ar, err := archive.NewReader(&countingReader{r: in, progress: req.Progress.of("checking")})
	if err != nil {
		return chk, err
	}
	// A member that makes no sense may be damage in transit: data that
	// inflates to garbage before the gzip CRC and the sum at the end can
	// tell. The rest of the archive says which, and damage is what to
	// report (export it again), not a content error.
	defer func() {
		if errors.Is(retErr, ErrBadArchive) {
			if err := ar.Drain(); errors.Is(err, archive.ErrCorrupt) {
				retErr = err
			}
		}
	}()
	h, content, err := ar.Next()
	if err != nil {
		return chk, err
	}
	if h.Name != manifestMember {
		return chk, fmt.Errorf("%w: it begins with %s, not %s", ErrBadArchive, h.Name, manifestMember)
	}
	if chk.man, err = readManifest(content); err != nil {
		return chk, err
	}
	man := &chk.man
	if access := hostAccess(man.Spec); len(access) > 0 && !req.TrustSettings {
		return chk, fmt.Errorf("%w: the archive of %s has %s; import it only if you trust who made it, with --trust-settings, or ask for an export without them", ErrHostAccess, man.Name, strings.Join(access, ", "))
	}
	policy := nix.TrustPolicy{}
	if !req.NoCheckSigs {
		if policy, err = nix.HostTrust(ctx); err != nil {
			return chk, err
		}
	}
	var paths []string
	for _, i := range man.Closure {
		paths = append(paths, i.Path)
	}
	if chk.invalid, err = nix.Invalid(ctx, paths); err != nil {
		return chk, err
	}
	tree := treecopy.NewTreeReader(rootPrefix, nil, treecopy.Options{Shift: relativeShift(*man, 0)})
	closure := newClosureCheck(ctx)
	defer closure.abort()
	stage := "manifest"
	for {
		h, content, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return chk, err
		}
		next, err := memberStage(h.Name, stage)
		if err != nil {
			return chk, err
		}
		if stage == "closure" && next != "closure" {
			closure.end()
		}
		stage = next
		switch stage {
		case "config":
			if !man.Config || h.Size > maxConfigSize {
				return chk, fmt.Errorf("%w: an unexpected %s", ErrBadArchive, configMember)
			}
			if chk.config, err = io.ReadAll(content); err != nil {
				return chk, err
			}
		case "closure":
			if err := closure.add(h.Name, content); err != nil {
				return chk, err
			}
		case "root":
			if err := tree.Add(h, content); err != nil {
				return chk, fmt.Errorf("%w: %v", ErrBadArchive, err)
			}
		}
	}
	if stage == "closure" {
		closure.end()
	}
	if _, err := tree.Finish(); err != nil {
		return chk, fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	if man.Config && chk.config == nil {
		return chk, fmt.Errorf("%w: its manifest names a configuration it does not hold", ErrBadArchive)
	}
	exported, err := closure.wait()
	if err != nil {
		return chk, err
	}
	return chk, checkClosure(*man, exported, chk.invalid, policy)
}

// hostAccess lists the settings of spec that reach beyond the container
// into the host that runs it. An archive's checksum proves it whole, not
// who made it, and its settings are taken as they are, so whoever made an
// archive would get, from one that has them, the host's root (privileged),
// its files (bind mounts), its devices or its networks, on a host whose
// administrator only meant to move a container. Empty when it has none.
func hostAccess(s spec.Spec) []string {
	var out []string
	if s.Privileged {
		out = append(out, "privileged = true (its root is the host's root)")
	}
	for _, b := range s.BindMounts {
		how := "read-only"
		if !b.IsReadOnly {
			how = "writable"
		}
		out = append(out, fmt.Sprintf("a %s bind mount of the host's %s at %s", how, b.HostPath, b.Destination))
	}
	for _, d := range s.AllowedDevices {
		out = append(out, fmt.Sprintf("access to the host's device %s (%s)", d.Node, d.Modifier))
	}
	if s.Network.HostNetwork {
		out = append(out, "the host's network (hostNetwork)")
	}
	if s.Network.Bridge != "" {
		out = append(out, fmt.Sprintf("a link on the host's bridge %s", s.Network.Bridge))
	}
	for _, l := range s.Network.Macvlans {
		out = append(out, fmt.Sprintf("a macvlan on the host's %s", l))
	}
	return out
}

// memberStage tells which part of an archive a member belongs to, given
// the part of the member before it: the parts come in order.
func memberStage(name, prev string) (string, error) {
	order := map[string]int{"manifest": 0, "config": 1, "closure": 2, "root": 3}
	var stage string
	switch {
	case name == configMember:
		stage = "config"
	case strings.HasPrefix(name, closurePrefix):
		stage = "closure"
	case strings.HasPrefix(name, rootPrefix):
		stage = "root"
	default:
		return "", fmt.Errorf("%w: an unknown member %s (an archive of a newer nixcell?)", ErrBadArchive, name)
	}
	if order[stage] < order[prev] || stage == "config" && prev == "config" {
		return "", fmt.Errorf("%w: %s is out of place", ErrBadArchive, name)
	}
	return stage, nil
}

func readManifest(r io.Reader) (Manifest, error) {
	var man Manifest
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return man, err
	}
	if err := json.Unmarshal(data, &man); err != nil {
		return man, fmt.Errorf("%w: its manifest: %v", ErrBadArchive, err)
	}
	if man.Format != manifestFormat {
		return man, fmt.Errorf("%w: format %d, where this nixcell reads %d", ErrBadArchive, man.Format, manifestFormat)
	}
	if err := spec.ValidateName(man.Name); err != nil {
		return man, fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	if err := man.Spec.Validate(); err != nil {
		return man, fmt.Errorf("%w: its settings: %v", ErrBadArchive, err)
	}
	if man.Spec.Privileged != (man.IDRangeSize == 0) || man.IDRangeSize != 0 && man.IDRangeSize != idmap.RangeSize {
		return man, fmt.Errorf("%w: an ID range of %d for a container with privileged = %t", ErrBadArchive, man.IDRangeSize, man.Spec.Privileged)
	}
	if man.Source.RootFS != "" {
		return man, fmt.Errorf("%w: a plain root file system container", ErrBadArchive)
	}
	inClosure := false
	for _, i := range man.Closure {
		base, ok := strings.CutPrefix(i.Path, nix.StoreDir+"/")
		if !ok || base == "" || base == "." || base == ".." || strings.Contains(base, "/") {
			return man, fmt.Errorf("%w: %q is not a store path", ErrBadArchive, i.Path)
		}
		inClosure = inClosure || i.Path == man.System
	}
	if !inClosure {
		return man, fmt.Errorf("%w: its system %s is not in its closure", ErrBadArchive, man.System)
	}
	return man, nil
}

// relativeShift maps an archive's owners (0 is the container's root) to
// the range starting at start; a privileged container's stay the host's.
func relativeShift(man Manifest, start uint32) treecopy.Shift {
	if man.IDRangeSize == 0 {
		return treecopy.Shift{}
	}
	return treecopy.Shift{From: 0, To: start, Size: man.IDRangeSize}
}

// closureCheck reads the closure's chunks as one export, in the
// background, as they arrive.
type closureCheck struct {
	pw     *io.PipeWriter
	done   chan struct{}
	paths  []nix.ExportedPath
	err    error
	chunks int
}

func newClosureCheck(ctx context.Context) *closureCheck {
	pr, pw := io.Pipe()
	c := &closureCheck{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.paths, c.err = nix.ReadExport(pr)
		if c.err == nil {
			// Nothing may follow the export's end.
			if n, _ := io.Copy(io.Discard, pr); n > 0 {
				c.err = fmt.Errorf("%w: %d bytes follow the end of the closure", ErrBadArchive, n)
			}
		}
		pr.CloseWithError(c.err)
	}()
	return c
}

func (c *closureCheck) add(name string, content io.Reader) error {
	if name != fmt.Sprintf("%s%06d", closurePrefix, c.chunks) {
		return fmt.Errorf("%w: %s is out of place", ErrBadArchive, name)
	}
	c.chunks++
	if _, err := io.Copy(c.pw, content); err != nil {
		if errors.Is(err, io.ErrClosedPipe) || c.failed() {
			<-c.done
			return fmt.Errorf("%w: its closure: %v", ErrBadArchive, c.err)
		}
		return err
	}
	return nil
}

func (c *closureCheck) failed() bool {
	select {
	case <-c.done:
		return c.err != nil
	default:
		return false
	}
}

func (c *closureCheck) end()   { c.pw.Close() }
func (c *closureCheck) abort() { c.pw.CloseWithError(errors.New("aborted")); <-c.done }

func (c *closureCheck) wait() ([]nix.ExportedPath, error) {
	c.pw.Close()
	<-c.done
	if c.err != nil {
		return nil, fmt.Errorf("%w: its closure: %v", ErrBadArchive, c.err)
	}
	return c.paths, nil
}

// checkClosure checks that the export holds exactly the closure the
// manifest describes, each path's NAR as described, and, for the paths to
// be imported, a trusted signature where policy requires one.
func checkClosure(man Manifest, exported []nix.ExportedPath, invalid []string, policy nix.TrustPolicy) error {
	byPath := map[string]nix.ExportedPath{}
	for _, e := range exported {
		if _, dup := byPath[e.Path]; dup {
			return fmt.Errorf("%w: %s is exported twice", ErrBadArchive, e.Path)
		}
		byPath[e.Path] = e
	}
	if len(byPath) != len(man.Closure) {
		return fmt.Errorf("%w: its closure holds %d store paths where its manifest describes %d", ErrBadArchive, len(byPath), len(man.Closure))
	}
	needed := map[string]bool{}
	for _, p := range invalid {
		needed[p] = true
	}
	described := map[string]bool{}
	for _, i := range man.Closure {
		described[i.Path] = true
	}
	for _, i := range man.Closure {
		e, ok := byPath[i.Path]
		if !ok {
			return fmt.Errorf("%w: %s is described but not exported", ErrBadArchive, i.Path)
		}
		for _, r := range i.References {
			if !described[r] {
				return fmt.Errorf("%w: %s refers to %s, which is not in the closure", ErrBadArchive, i.Path, r)
			}
		}
		p := policy
		p.RequireSigs = p.RequireSigs && needed[i.Path] // a path the store has is not imported
		if err := p.CheckTrust(i, e); err != nil {
			if errors.Is(err, nix.ErrUntrusted) {
				return fmt.Errorf("%w (sign the closure on the exporting host with nix store sign -k KEY -r %s and trust its key here, or import with --no-check-sigs)", err, man.System)
			}
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
	}
	return nil
}

// importLocked makes the container of a checked archive, reading it the
// second time. Preconditions: the name's lock is held and claimed.
func (m *Manager) importLocked(ctx context.Context, in io.Reader, req ImportRequest, chk checked, res *ImportResult) (retErr error) {
	man, name := chk.man, res.Name
	rec := &state.Container{
		Name: name, Phase: state.Creating, CreatedAt: man.CreatedAt, UUID: man.UUID,
		Source: man.Source, Spec: man.Spec, LimitOverrides: man.LimitOverrides,
	}
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	if err := m.Store.Save(rec); err != nil {
		return err
	}
	u.Push("removing the record", func(context.Context) error { return m.Store.Remove(name) })
	if err := failpoint.Hit("import/recorded"); err != nil {
		return err
	}
	if err := m.importSource(rec, chk, res); err != nil {
		return err
	}
	if err := m.importAddresses(ctx, rec, man, res); err != nil {
		return err
	}
	u.Push("releasing its addresses", func(ctx context.Context) error { return m.releaseAddresses(ctx, name) })
	if err := failpoint.Hit("import/addresses"); err != nil {
		return err
	}
	var startID uint32
	if rec.Spec.Privileged {
		m.warnf("%s is privileged: its root is the host's root, and so are its files' owners from the archive", name)
	} else {
		r, err := m.IDs.Allocate(ctx, name)
		if err != nil {
			return fmt.Errorf("allocating an ID range: %w", err)
		}
		u.Push("releasing its ID range", func(ctx context.Context) error { return m.IDs.Release(ctx, name) })
		startID = r.Start
	}
	if err := failpoint.Hit("import/ids"); err != nil {
		return err
	}
	for _, b := range rec.Spec.BindMounts {
		if _, err := os.Lstat(b.HostPath); err != nil && !b.Create {
			m.warnf("%s: bind mount %s: its host path %s does not exist here; create it before starting it", name, b.Destination, b.HostPath)
		}
	}

	ar, err := archive.NewReader(&countingReader{r: in, progress: req.Progress.of("importing")})
	if err != nil {
		return err
	}
	profile := nix.Profile{Name: name}
	var tree *treecopy.TreeReader
	var importer *storeImport
	defer func() {
		if importer != nil {
			importer.abort()
		}
		if tree != nil {
			tree.Abort()
		}
	}()
	for {
		h, content, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w (it changed since it was checked?)", err)
		}
		switch {
		case strings.HasPrefix(h.Name, closurePrefix):
			if len(chk.invalid) == 0 {
				continue // the store has every path
			}
			if importer == nil {
				importer = newStoreImport(ctx)
			}
			if err := importer.add(content); err != nil {
				return err
			}
		case strings.HasPrefix(h.Name, rootPrefix):
			if tree == nil {
				if err := m.importGeneration(ctx, importer, profile, startID, man, &u); err != nil {
					return err
				}
				importer = nil
				dst, err := m.newRootTree(rec, m.Store.RootFS(name))
				if err != nil {
					return err
				}
				defer dst.Close()
				u.Push("removing its root", func(context.Context) error { return m.Store.RemoveRoot(name) })
				tree = treecopy.NewTreeReader(rootPrefix, dst, treecopy.Options{Shift: relativeShift(man, startID)})
			}
			if err := tree.Add(h, content); err != nil {
				return err
			}
		}
	}
	if tree == nil {
		return fmt.Errorf("%w: it holds no root", ErrBadArchive)
	}
	stats, err := tree.Finish()
	tree = nil
	res.Root = copyStatsOf(stats)
	if err != nil {
		return err
	}
	if err := failpoint.Hit("import/root"); err != nil {
		return err
	}
	rec.Phase = state.Created
	return m.Store.Save(rec)
}

// importGeneration finishes the import of the closure, if any, and makes
// the archive's system generation 1 of the container's profile.
func (m *Manager) importGeneration(ctx context.Context, importer *storeImport, profile nix.Profile, uid uint32, man Manifest, u *undo.Stack) error {
	if importer != nil {
		if err := importer.wait(); err != nil {
			return fmt.Errorf("importing the closure of %s: %w", man.System, err)
		}
	}
	if err := failpoint.Hit("import/closure"); err != nil {
		return err
	}
	if err := claimProfile(u, profile); err != nil {
		return err
	}
	if err := profile.Ensure(int(uid)); err != nil {
		return err
	}
	if _, err := profile.Set(ctx, man.System); err != nil {
		return fmt.Errorf("setting profile %s: %w", profile.System(), err)
	}
	return failpoint.Hit("import/profile")
}

// storeImport feeds chunks of an export to nix-store --import.
type storeImport struct {
	pw   *io.PipeWriter
	done chan error
}

func newStoreImport(ctx context.Context) *storeImport {
	pr, pw := io.Pipe()
	s := &storeImport{pw: pw, done: make(chan error, 1)}
	go func() {
		err := nix.Import(ctx, pr)
		pr.CloseWithError(err)
		s.done <- err
	}()
	return s
}

func (s *storeImport) add(content io.Reader) error {
	if _, err := io.Copy(s.pw, content); err != nil {
		s.pw.CloseWithError(err)
		if ierr := <-s.done; ierr != nil {
			return ierr
		}
		return err
	}
	return nil
}

func (s *storeImport) wait() error {
	s.pw.Close()
	return <-s.done
}

func (s *storeImport) abort() {
	s.pw.CloseWithError(errors.New("import aborted"))
	<-s.done
}

// importSource is the imported container's source: its configuration,
// when it traveled along, becomes its own inline configuration; a
// configuration that stayed behind leaves it with its system only.
func (m *Manager) importSource(rec *state.Container, chk checked, res *ImportResult) error {
	src := rec.Source
	switch {
	case chk.config != nil:
		path := m.Store.InlineConfig(rec.Name)
		if err := os.WriteFile(path, chk.config, 0o644); err != nil {
			return err
		}
		if !src.Inline {
			res.Changed = append(res.Changed, fmt.Sprintf("its configuration %s (on the exporting host) is now its own copy, %s", src.ConfigFile, path))
		}
		src.ConfigFile, src.Inline = path, true
	case src.ConfigFile != "":
		res.Changed = append(res.Changed, fmt.Sprintf("its configuration %s stayed on the exporting host: update it with one of this host (nixcell update %s CONFIG)", src.ConfigFile, rec.Name))
		src = state.Source{SystemPath: chk.man.System, NixArgs: src.NixArgs}
	case src.Flake != "":
		res.Changed = append(res.Changed, fmt.Sprintf("its flake %s must be reachable here for its next update", src.Flake))
	}
	rec.Source = src
	return m.Store.Save(rec)
}

// importAddresses gives the container the addresses it had where it was
// exported when they are free here, and others otherwise; fixed addresses
// (network.ip) that are taken or outside this host's subnets become
// automatic ones. Port forwards of host ports that another container
// forwards here are dropped.
func (m *Manager) importAddresses(ctx context.Context, rec *state.Container, man Manifest, res *ImportResult) error {
	held := man.Addresses
	err := m.Net.Update(ctx, func(st *network.State) error {
		a, err := st.Settings.Allocate(rec.Name, rec.Spec.Network, held, st.Addresses)
		if err != nil && (rec.Spec.Network.IP.IsValid() || rec.Spec.Network.IP6.IsValid()) {
			res.Changed = append(res.Changed, fmt.Sprintf("its fixed addresses cannot be had here (%v): it gets automatic ones", err))
			rec.Spec.Network.IP, rec.Spec.Network.IP6 = netip.Prefix{}, netip.Prefix{}
			a, err = st.Settings.Allocate(rec.Name, rec.Spec.Network, held, st.Addresses)
		}
		if err != nil {
			return err
		}
		var kept []spec.PortForward
		for _, f := range rec.Spec.Network.ForwardPorts {
			if err := network.CheckPorts(rec.Name, []spec.PortForward{f}, st.Ports); err != nil {
				res.Changed = append(res.Changed, fmt.Sprintf("has no forward of %s port %d: %v", f.Protocol, f.HostPort, err))
				continue
			}
			kept = append(kept, f)
		}
		rec.Spec.Network.ForwardPorts = kept
		if err := st.ClaimPorts(rec.Name, kept); err != nil {
			return err
		}
		st.Addresses[rec.Name] = a
		res.KeptAddress = a.HostOnly4 == held.HostOnly4
		return nil
	})
	if err != nil {
		return err
	}
	if !res.KeptAddress && held.HostOnly4.IsValid() {
		res.Changed = append(res.Changed, fmt.Sprintf("its address %s is taken or not in this host's subnet: it has a new one", held.HostOnly4))
	}
	if shown, err := m.ShowIP(rec.Name); err == nil {
		res.IPv4, res.IPv6 = shown.IPv4, shown.IPv6
	}
	return m.Store.Save(rec)
}
