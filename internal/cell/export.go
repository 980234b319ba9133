package cell

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nixcell/nixcell/internal/archive"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/idmap"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/network"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/treecopy"
)

// An export is one archive (package archive) with these members, in this
// order:
//
//	nixcell-export.json   the Manifest
//	configuration.nix     the configuration file, when it is one file
//	closure/000000 ...    the current generation's closure as nix-store --export writes it, in chunks
//	root/ ...             the root, owners relative to the container's range (0 is its root)
//	nixcell-archive.sha256  the archive's checksum
//
// The chunks let the closure stream: tar needs each member's size first.
const (
	manifestMember = "nixcell-export.json"
	configMember   = "configuration.nix"
	closurePrefix  = "closure/"
	rootPrefix     = "root/"
	closureChunk   = 16 << 20
	manifestFormat = 1
	maxConfigSize  = 1 << 20
)

// Manifest says what an archive holds.
type Manifest struct {
	Format     int       `json:"format"`
	Name       string    `json:"name"`
	ExportedAt time.Time `json:"exportedAt"`
	UUID       string    `json:"uuid"`
	CreatedAt  time.Time `json:"createdAt"`
	// Source, Spec and LimitOverrides are the container's record.
	Source         state.Source        `json:"source"`
	Spec           spec.Spec           `json:"spec"`
	LimitOverrides spec.LimitOverrides `json:"limitOverrides,omitzero"`
	// Config: the configuration file is the member configuration.nix.
	Config bool `json:"config,omitempty"`
	// Generation and System are the generation that was current; Closure
	// describes every store path of its closure, references first.
	Generation int            `json:"generation"`
	System     string         `json:"system"`
	Closure    []nix.PathInfo `json:"closure"`
	// Addresses are those it held on the exporting host.
	Addresses network.Addresses `json:"addresses"`
	// IDRangeSize is the size of the range its owners are relative to; 0
	// for a privileged container, whose owners are the host's IDs.
	IDRangeSize uint32 `json:"idRangeSize"`
}

// ExportRequest says what to export where.
type ExportRequest struct {
	Name     string
	Out      io.Writer
	Progress Progress
}

// ExportResult reports an export.
type ExportResult struct {
	Name         string        `json:"name"`
	Generation   int           `json:"generation"`
	System       string        `json:"system"`
	StorePaths   int           `json:"storePaths"`
	ClosureBytes int64         `json:"closureBytes"`
	Root         CopyStats     `json:"root"`
	Frozen       time.Duration `json:"frozen"`
	Took         time.Duration `json:"took"`
}

// Export writes the container as one archive to req.Out: its settings,
// its current generation's closure, its root (owners made relative to its
// range) and its addresses. A running container is frozen while its root
// is copied aside (copy-on-write where the file system can), then thawed,
// and the copy is written out, so a slow reader does not keep it frozen.
// Its own GC roots and users' profiles are not exported.
func (m *Manager) Export(ctx context.Context, req ExportRequest) (res ExportResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	res.Name = req.Name
	rec, st, unlock, err := m.locked(ctx, req.Name, lifecycle.Copy)
	if err != nil {
		return res, err
	}
	defer unlock()
	if err := copyable(rec); err != nil {
		return res, err
	}
	man, config, err := m.manifestOf(ctx, rec)
	if err != nil {
		return res, err
	}
	res.Generation, res.System, res.StorePaths = man.Generation, man.System, len(man.Closure)
	shift, err := m.shiftOf(rec)
	if err != nil {
		return res, err
	}
	if err := m.ensureRoot(rec, shift); err != nil {
		return res, err
	}
	if !shift.Identity() {
		shift.To = 0 // relative: the container's root is 0
	}

	root := m.Store.RootFS(req.Name)
	if st == lifecycle.Running {
		aside := m.exportAside(req.Name)
		if err := os.RemoveAll(aside); err != nil {
			return res, err
		}
		defer os.RemoveAll(aside)
		thaw, err := m.holdStill(req.Name, st)
		if err != nil {
			return res, err
		}
		frozen := time.Now()
		_, err = copyTree(ctx, root, aside, treecopy.Shift{}, req.Progress.of("copying"))
		res.Frozen = time.Since(frozen)
		if terr := thaw(); terr != nil && err == nil {
			err = terr
		}
		if err != nil {
			return res, fmt.Errorf("copying the root of %s aside: %w", req.Name, err)
		}
		root = aside
	}
	rootDir, err := openTree(root)
	if err != nil {
		return res, err
	}
	defer rootDir.Close()

	aw := archive.NewWriter(req.Out)
	data, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return res, err
	}
	if err := aw.AddFile(manifestMember, data); err != nil {
		return res, err
	}
	if man.Config {
		if err := aw.AddFile(configMember, config); err != nil {
			return res, err
		}
	}
	if res.ClosureBytes, err = writeClosure(ctx, aw, man.Closure, req.Progress.of("closure")); err != nil {
		return res, fmt.Errorf("exporting the closure of %s: %w", man.System, err)
	}
	tree, err := treecopy.WriteTar(ctx, rootDir, aw, rootPrefix, treecopy.Options{Shift: shift, Progress: req.Progress.of("root")})
	res.Root = copyStatsOf(tree)
	if err != nil {
		return res, fmt.Errorf("archiving the root of %s: %w", req.Name, err)
	}
	return res, aw.Close()
}

// exportAside is where the root of a running container is copied for an
// export; recoverLocked removes what a killed export left there.
func (m *Manager) exportAside(name string) string {
	return filepath.Join(m.Store.Dir(name), "root.export")
}

// manifestOf describes rec for an archive, with its configuration file's
// content when that travels along.
func (m *Manager) manifestOf(ctx context.Context, rec *state.Container) (Manifest, []byte, error) {
	man := Manifest{
		Format: manifestFormat, Name: rec.Name, ExportedAt: time.Now().UTC().Truncate(time.Second),
		UUID: uuidOf(rec), CreatedAt: rec.CreatedAt, Source: rec.Source, Spec: rec.Spec, LimitOverrides: rec.LimitOverrides,
	}
	if !rec.Spec.Privileged {
		man.IDRangeSize = idmap.RangeSize
	}
	var err error
	if man.Generation, man.System, err = (nix.Profile{Name: rec.Name}).Current(); err != nil {
		return man, nil, err
	}
	if man.Generation == 0 {
		return man, nil, fmt.Errorf("%s has no generation to export", rec.Name)
	}
	paths, err := nix.Closure(ctx, man.System)
	if err != nil {
		return man, nil, fmt.Errorf("finding the closure of %s: %w", man.System, err)
	}
	infos, err := nix.PathInfos(ctx, paths)
	if err != nil {
		return man, nil, err
	}
	byPath := map[string]nix.PathInfo{}
	for _, i := range infos {
		byPath[i.Path] = i
	}
	for _, p := range paths { // nix-store -qR order: references first
		i, ok := byPath[p]
		if !ok {
			return man, nil, fmt.Errorf("nix path-info says nothing of %s", p)
		}
		man.Closure = append(man.Closure, i)
	}
	if st, err := m.Net.Load(); err == nil {
		man.Addresses = st.Addresses[rec.Name]
	}
	var config []byte
	if f := rec.Source.ConfigFile; f != "" {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Size() <= maxConfigSize {
			if config, err = os.ReadFile(f); err != nil {
				return man, nil, fmt.Errorf("reading the configuration %s: %w", f, err)
			}
			man.Config = true
		} else if !rec.Source.Inline {
			m.warnf("the configuration %s of %s is not one file and is not exported: update the imported container with a configuration of its new host", f, rec.Name)
		}
	}
	return man, config, nil
}

// writeClosure writes the export of paths as members of closureChunk
// bytes at most, and returns how many bytes it wrote.
func writeClosure(ctx context.Context, aw *archive.Writer, closure []nix.PathInfo, progress func(int64)) (int64, error) {
	var paths []string
	for _, i := range closure {
		paths = append(paths, i.Path)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := nix.Export(ctx, paths, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	defer pr.Close()
	buf := make([]byte, closureChunk)
	var total int64
	for i := 0; ; i++ {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			if werr := aw.AddFile(fmt.Sprintf("%s%06d", closurePrefix, i), buf[:n]); werr != nil {
				cancel()
				<-done
				return total, werr
			}
			total += int64(n)
			if progress != nil {
				progress(total)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, <-done
		}
		if err != nil {
			<-done
			return total, err
		}
	}
}

// ImportRequest says what to import.
type ImportRequest struct {
	// In is the archive: a file, read twice (once to check it, once to
	// import it), or a stream, which is kept in an unnamed temporary file
	// in the state directory meanwhile.
	In io.Reader
	// Name is the new container's name; empty: the exported one's.
	Name string
	// NoCheckSigs imports store paths without a trusted signature even
	// when the host's Nix requires one (as nix copy --no-check-sigs).
	NoCheckSigs bool
	// TrustSettings imports settings that reach into the host (see
	// hostAccess), which an archive cannot otherwise bring.
	TrustSettings bool
	Progress      Progress
}

// ImportResult reports an import.
type ImportResult struct {
	Name       string `json:"name"`
	Exported   string `json:"exported"` // its name where it was exported
	Generation int    `json:"generation"`
	System     string `json:"system"`
	// StorePaths is the size of the closure; Imported, how many of its
	// paths the store did not have.
	StorePaths int    `json:"storePaths"`
	Imported   int    `json:"imported"`
	IPv4       string `json:"ipv4"`
	IPv6       string `json:"ipv6"`
	// KeptAddress: it has the IPv4 address it had where it was exported.
	KeptAddress bool          `json:"keptAddress"`
	Changed     []string      `json:"changed,omitempty"`
	Root        CopyStats     `json:"root"`
	Took        time.Duration `json:"took"`
}

// ErrBadArchive is the class of archives that are not a container's.
var ErrBadArchive = fault.New(fault.Invalid, "not a nixcell archive")

// ErrHostAccess is the class of archives refused because their settings
// reach into the importing host.
var ErrHostAccess = fault.New(fault.Invalid, "its settings reach into this host")

// checked is what the first reading of an archive found.
type checked struct {
	man     Manifest
	config  []byte
	invalid []string // closure paths the store lacks
}

// Import makes a container of an archive that Export wrote, on this host
// or another. The whole archive is checked first (its checksum, the
// structure of its root, every store path's NAR against its description
// and, where this host's Nix requires signatures, against a trusted
// signature), so a truncated, corrupted or untrusted archive changes
// nothing. Then, as create does, it records the container as creating and
// undoes every finished step when a later one fails: the closure is
// imported into the store (paths it has are kept), the generation becomes
// generation 1 of a profile of its own, the root is written with its
// owners shifted into a range allocated here, and it keeps its addresses
// where they are free here (otherwise it gets new ones; the result says
// which). If it is killed, the next create, clone, import or destroy of
// that name cleans up.
func (m *Manager) Import(ctx context.Context, req ImportRequest) (res ImportResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	in, err := m.rereadable(req.In)
	if err != nil {
		return res, err
	}
	defer in.Close()
	chk, err := m.checkArchive(ctx, in.first(), req)
	if err != nil {
		return res, fmt.Errorf("%w; nothing was changed", err)
	}
	man := chk.man
	res.Exported, res.Generation, res.System = man.Name, 1, man.System
	res.StorePaths, res.Imported = len(man.Closure), len(chk.invalid)
	name := req.Name
	if name == "" {
		name = man.Name
	}
	res.Name = name
	if err := spec.ValidateName(name); err != nil {
		return res, err
	}
	lock, err := m.lock(ctx, name)
	if err != nil {
		return res, err
	}
	defer m.unlockMissing(lock, name)
	if err := m.claimName(ctx, name); err != nil {
		return res, err
	}
	second, err := in.second()
	if err != nil {
		return res, err
	}
	return res, m.importLocked(ctx, second, req, chk, &res)
}
