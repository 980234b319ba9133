package cell

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/treecopy"
	"github.com/nixcell/nixcell/internal/undo"
)

// CloneRequest says what to copy into a new container.
type CloneRequest struct {
	Source, Name string
	// Progress, when set, follows the copy of the files.
	Progress Progress
}

// CloneResult reports a clone.
type CloneResult struct {
	Name        string `json:"name"`
	Source      string `json:"source"`
	Generations int    `json:"generations"`
	Generation  int    `json:"generation"`
	IPv4        string `json:"ipv4"`
	IPv6        string `json:"ipv6"`
	// Changed lists the settings the clone could not take from its source
	// (port forwards, fixed addresses), each with why.
	Changed []string      `json:"changed,omitempty"`
	Copied  CopyStats     `json:"copied"`
	Frozen  time.Duration `json:"frozen"` // how long a running source was frozen
	Took    time.Duration `json:"took"`
}

// Clone makes the container req.Name a copy of req.Source: its generations
// (the same store paths, in a profile of its own, numbered as the
// source's), its settings and its files, owned by a new ID range (its
// owners shifted into it, setuid bits, file capabilities and ACLs kept),
// with new addresses and no port forwards, which would collide with the
// source's. A running source is frozen while its files are copied and
// thawed after. Like create, it records the new container as creating
// first and undoes every finished step when a later one fails; if it is
// killed, the next create, clone, import or destroy of that name cleans
// up, and the source is thawed by a guard, or by the next command on it.
func (m *Manager) Clone(ctx context.Context, req CloneRequest) (res CloneResult, retErr error) {
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	res.Name, res.Source = req.Name, req.Source
	if err := validNames(req.Source, req.Name); err != nil {
		return res, err
	}
	unlock, err := m.lockPair(ctx, req.Source, req.Name)
	if err != nil {
		return res, err
	}
	defer unlock()
	src, err := m.Store.Load(req.Source)
	if err != nil {
		return res, err
	}
	st, _, err := m.stateOf(src)
	if err != nil {
		return res, err
	}
	if err := lifecycle.Check(st, lifecycle.Copy); err != nil {
		return res, err
	}
	if err := copyable(src); err != nil {
		return res, err
	}
	if err := m.recoverLocked(req.Source); err != nil {
		return res, err
	}
	shift, err := m.shiftOf(src)
	if err != nil {
		return res, err
	}
	if err := m.ensureRoot(src, shift); err != nil {
		return res, err
	}
	if err := m.claimName(ctx, req.Name); err != nil {
		return res, err
	}

	id, err := newUUID()
	if err != nil {
		return res, err
	}
	rec := &state.Container{
		Name: req.Name, Phase: state.Creating, CreatedAt: time.Now().UTC().Truncate(time.Second), UUID: id,
		Source: src.Source, Spec: src.Spec, LimitOverrides: src.LimitOverrides,
	}
	rec.Spec.Network, res.Changed = cloneNetwork(src.Spec.Network)
	for _, c := range res.Changed {
		m.warnf("%s: %s", req.Name, c)
	}
	if len(src.Spec.BindMounts) > 0 {
		m.warnf("%s shares the bind mounts of %s (the same host paths), which are not copied", req.Name, req.Source)
	}
	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	if err := m.Store.Save(rec); err != nil {
		return res, err
	}
	u.Push("removing the record", func(context.Context) error { return m.Store.Remove(req.Name) })
	if err := failpoint.Hit("clone/recorded"); err != nil {
		return res, err
	}
	if rec.Source, err = m.copyInline(src, req.Name); err != nil {
		return res, err
	}
	if err := m.allocateAddresses(ctx, rec); err != nil {
		return res, err
	}
	u.Push("releasing its addresses", func(ctx context.Context) error { return m.releaseAddresses(ctx, req.Name) })
	if err := failpoint.Hit("clone/addresses"); err != nil {
		return res, err
	}
	to := treecopy.Shift{} // a privileged clone keeps the host's IDs
	if !rec.Spec.Privileged {
		r, err := m.IDs.Allocate(ctx, req.Name)
		if err != nil {
			return res, fmt.Errorf("allocating an ID range: %w", err)
		}
		u.Push("releasing its ID range", func(ctx context.Context) error { return m.IDs.Release(ctx, req.Name) })
		shift.To = r.Start
		to = treecopy.Shift{From: r.Start, To: r.Start, Size: r.Size}
	}
	if err := failpoint.Hit("clone/ids"); err != nil {
		return res, err
	}

	from, profile := nix.Profile{Name: req.Source}, nix.Profile{Name: req.Name}
	gens, err := from.Generations()
	if err != nil {
		return res, err
	}
	current, _, err := from.Current()
	if err != nil {
		return res, err
	}
	if err := claimProfile(&u, profile); err != nil {
		return res, err
	}
	if err := profile.Ensure(int(to.To)); err != nil {
		return res, err
	}
	if err := profile.Replicate(gens, current); err != nil {
		return res, fmt.Errorf("copying the generations of %s: %w", req.Source, err)
	}
	res.Generations, res.Generation = len(gens), current
	if err := failpoint.Hit("clone/profile"); err != nil {
		return res, err
	}

	u.Push("removing its root", func(context.Context) error { return m.Store.RemoveRoot(req.Name) })
	thaw, err := m.holdStill(req.Source, st)
	if err != nil {
		return res, err
	}
	frozen := time.Now()
	copied, err := m.cloneTrees(ctx, req, rec, shift, profile)
	if st == lifecycle.Running {
		res.Frozen = time.Since(frozen)
	}
	if terr := thaw(); terr != nil && err == nil {
		err = terr
	}
	res.Copied = copied
	if err != nil {
		return res, err
	}
	if err := failpoint.Hit("clone/copied"); err != nil {
		return res, err
	}
	rec.Phase = state.Created
	if err := m.Store.Save(rec); err != nil {
		return res, err
	}
	if shown, err := m.ShowIP(req.Name); err == nil {
		res.IPv4, res.IPv6 = shown.IPv4, shown.IPv6
	}
	return res, nil
}

// cloneTrees copies the source's root and its own GC roots and users'
// profiles into the clone rec, owners shifted.
func (m *Manager) cloneTrees(ctx context.Context, req CloneRequest, rec *state.Container, shift treecopy.Shift, profile nix.Profile) (CopyStats, error) {
	var stats CopyStats
	if err := failpoint.Hit("clone/frozen"); err != nil {
		return stats, err
	}
	dst, err := m.newRootTree(rec, m.Store.RootFS(req.Name))
	if err != nil {
		return stats, err
	}
	defer dst.Close()
	st, err := copyTreeTo(ctx, m.Store.RootFS(req.Source), dst, shift, req.Progress.of("copying"))
	stats.add(st)
	if err != nil {
		return stats, fmt.Errorf("copying the root of %s: %w", req.Source, err)
	}
	// Ensure made the clone's GC roots directory; the copy replaces it.
	if err := os.RemoveAll(profile.GCRootsDir()); err != nil {
		return stats, err
	}
	if _, err := os.Lstat(gcRootsTree(req.Source)); err == nil {
		st, err := copyTree(ctx, gcRootsTree(req.Source), profile.GCRootsDir(), shift, nil)
		if err != nil {
			return stats, fmt.Errorf("copying the GC roots and users' profiles of %s: %w", req.Source, err)
		}
		stats.Files += st.Files + st.Hardlinks
	}
	// What the source made of that tree, the clone has too: its start
	// checks it as the source's does (Profile.Ensure).
	return stats, nil
}

// cloneNetwork is the network of a clone: its source's, without what
// would collide with the source's (port forwards, fixed addresses), and
// what was dropped, each with why.
func cloneNetwork(n spec.Network) (spec.Network, []string) {
	var changed []string
	if len(n.ForwardPorts) > 0 {
		changed = append(changed, fmt.Sprintf("has no port forwards: the %d of its source would collide with the source's", len(n.ForwardPorts)))
		n.ForwardPorts = nil
	}
	if n.IP.IsValid() || n.IP6.IsValid() {
		changed = append(changed, "gets addresses of its own instead of its source's fixed network.ip/ip6")
		n.IP, n.IP6 = netip.Prefix{}, netip.Prefix{}
	}
	if n.Bridge != "" {
		changed = append(changed, fmt.Sprintf("is on nixcell's host-only bridge instead of %s, where addresses are fixed", n.Bridge))
		n.Bridge = ""
	}
	if n.HostAddress.IsValid() || n.LocalAddress.IsValid() || n.HostAddress6.IsValid() || n.LocalAddress6.IsValid() {
		changed = append(changed, "is on nixcell's host-only bridge instead of its source's private veth, whose addresses are fixed")
		n.HostAddress, n.LocalAddress, n.HostAddress6, n.LocalAddress6 = netip.Prefix{}, netip.Prefix{}, netip.Prefix{}, netip.Prefix{}
	}
	if len(changed) > 0 {
		changed = append(changed, "its configuration still says otherwise: give it one of its own before its next update (nixcell update NAME CONFIG)")
	}
	if n.HostNetwork {
		changed = append(changed, "shares the host's network with its source: their services' ports collide")
	}
	return n, changed
}
