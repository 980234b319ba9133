package cell

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/failpoint"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/hostfs"
	"github.com/nixcell/nixcell/internal/nix"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"github.com/nixcell/nixcell/internal/undo"
)

// Where nixos-container keeps an imperative container (stateVersion 22.05
// and later; older hosts use /etc/containers and /var/lib/containers).
const (
	NixosContainersConf = "/etc/nixos-containers"
	NixosContainersRoot = "/var/lib/nixos-containers"
)

// AdoptRequest says which nixos-container container to take over.
type AdoptRequest struct {
	Name string
	// ConfFile and Root are its configuration (KEY=VALUE lines) and root;
	// empty means nixos-container's places for Name.
	ConfFile, Root string
	// Privileged keeps the root as it is, owned by the host's IDs, and the
	// container without a user namespace, as nixos-container ran it.
	Privileged bool
	// DryRun says what would change and changes nothing.
	DryRun bool
}

// AdoptPlan is what an adopt does (or would do).
type AdoptPlan struct {
	Name        string    `json:"name"`
	ConfFile    string    `json:"confFile"`
	From        string    `json:"from"` // the root now
	To          string    `json:"to"`   // the root afterwards
	Generations []int     `json:"generations"`
	Current     int       `json:"current"`
	Settings    spec.Spec `json:"settings"`
	Privileged  bool      `json:"privileged"`
	// IDs is the range its files move to (omitted when privileged or in a
	// dry run, which allocates nothing).
	IDs   *idRange `json:"ids,omitempty"`
	Files int      `json:"files"` // files whose owner is shifted
	// UserProfiles are entries of the profile's per-user directory that
	// move to the container's own place.
	UserProfiles []string `json:"userProfiles,omitempty"`
}

type idRange struct {
	Start uint32 `json:"start"`
	Size  uint32 `json:"size"`
}

// nixosContainerKeys maps the keys of a nixos-container configuration that
// nixcell honours to how; any other key with a value is refused.
var nixosContainerKeys = map[string]bool{
	"PRIVATE_NETWORK": true, "HOST_ADDRESS": true, "LOCAL_ADDRESS": true, "HOST_ADDRESS6": true,
	"LOCAL_ADDRESS6": true, "HOST_BRIDGE": true, "HOST_PORT": true, "AUTO_START": true, "MACVLANS": true,
	"SYSTEM_PATH": true,
}

// ErrCannotAdopt is the class of nixos-container containers with settings
// nixcell cannot honour.
var ErrCannotAdopt = fault.New(fault.Invalid, "cannot adopt")

// Adopt takes over a container that nixos-container made: its generations
// (its profile is at nixcell's own path), its data (the root moves into
// the state directory, its files shifted into a new ID range unless
// Privileged) and its addresses and forwards. nixos-container's
// configuration file is renamed, so nixos-container no longer lists it.
// Each finished step is undone when a later one fails.
func (m *Manager) Adopt(ctx context.Context, req AdoptRequest) (plan AdoptPlan, retErr error) {
	if err := spec.ValidateName(req.Name); err != nil {
		return plan, err
	}
	if req.ConfFile == "" {
		req.ConfFile = filepath.Join(NixosContainersConf, req.Name+".conf")
	}
	if req.Root == "" {
		req.Root = filepath.Join(NixosContainersRoot, req.Name)
	}
	plan = AdoptPlan{Name: req.Name, ConfFile: req.ConfFile, From: req.Root, To: m.Store.RootFS(req.Name), Privileged: req.Privileged}
	lock, err := m.Store.Lock(ctx, req.Name)
	if err != nil {
		return plan, err
	}
	defer lock.Unlock()
	if _, err := m.Store.Load(req.Name); err == nil || dirExists(m.Store.Dir(req.Name)) {
		return plan, fmt.Errorf("%w: %q is a nixcell container already (adopted before?)", state.ErrExists, req.Name)
	}

	conf, err := readNixosContainerConf(req.ConfFile)
	if err != nil {
		return plan, err
	}
	if plan.Settings, err = settingsOfNixosContainer(conf); err != nil {
		return plan, err
	}
	plan.Settings.Privileged = req.Privileged
	profile := nix.Profile{Name: req.Name}
	gens, err := profile.Generations()
	if err != nil {
		return plan, err
	}
	current, system, err := profile.Current()
	if err != nil {
		return plan, err
	}
	if current == 0 {
		return plan, fmt.Errorf("%w: %s has no generation in %s", ErrCannotAdopt, req.Name, profile.Dir())
	}
	for _, g := range gens {
		plan.Generations = append(plan.Generations, g.Number)
	}
	plan.Current = current
	if fi, err := os.Lstat(req.Root); err != nil || !fi.IsDir() {
		return plan, fmt.Errorf("%w: its root %s is not a directory", ErrCannotAdopt, req.Root)
	}
	if pid := processIn(req.Root); pid != 0 {
		return plan, fmt.Errorf("%w: process %d runs in %s; stop it first (nixos-container stop %s)", ErrCannotAdopt, pid, req.Root, req.Name)
	}
	if plan.UserProfiles, err = userProfilesOf(profile); err != nil {
		return plan, err
	}
	if plan.Files, err = countFiles(req.Root); err != nil {
		return plan, err
	}
	if req.DryRun {
		return plan, nil
	}

	var u undo.Stack
	defer u.OnError(ctx, &retErr, m.warnf)
	id, err := newUUID()
	if err != nil {
		return plan, err
	}
	rec := &state.Container{Name: req.Name, Phase: state.Creating, CreatedAt: time.Now().UTC().Truncate(time.Second), UUID: id,
		Source: state.Source{SystemPath: system}, Spec: plan.Settings}
	if err := m.Store.Save(rec); err != nil {
		return plan, err
	}
	u.Push("removing the record", func(context.Context) error {
		if err := m.Store.Remove(req.Name); err != nil {
			return err
		}
		return lock.Remove()
	})
	if err := m.allocateAddresses(ctx, rec); err != nil {
		return plan, err
	}
	u.Push("releasing its addresses and ports", func(ctx context.Context) error { return m.releaseAddresses(ctx, req.Name) })
	rootUID := 0
	if !req.Privileged {
		r, err := m.IDs.Allocate(ctx, req.Name)
		if err != nil {
			return plan, fmt.Errorf("allocating an ID range: %w", err)
		}
		u.Push("releasing its ID range", func(ctx context.Context) error { return m.IDs.Release(ctx, req.Name) })
		plan.IDs = &idRange{Start: r.Start, Size: r.Size}
		rootUID = int(r.Start)
	}
	if err := failpoint.Hit("adopt/recorded"); err != nil {
		return plan, err
	}
	if err := os.Rename(req.Root, plan.To); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return plan, fmt.Errorf("%w: %s is on another file system than %s; move it there first (mv %s %s), then adopt with --root", ErrCannotAdopt, req.Root, m.Store.Root, req.Root, plan.To)
		}
		return plan, fmt.Errorf("moving the root: %w", err)
	}
	u.Push("moving the root back", func(context.Context) error { return os.Rename(plan.To, req.Root) })
	if err := failpoint.Hit("adopt/moved"); err != nil {
		return plan, err
	}
	if !req.Privileged {
		shift := hostfs.Shift{From: 0, Size: plan.IDs.Size, To: plan.IDs.Start}
		u.Push("shifting the owners back", func(context.Context) error {
			return hostfs.Shift{From: plan.IDs.Start, Size: plan.IDs.Size, To: 0}.Apply(plan.To)
		})
		if err := shift.Apply(plan.To); err != nil {
			var out *hostfs.OutOfRangeError
			if errors.As(err, &out) {
				return plan, fmt.Errorf("%w: %v (a container nspawn ran with private users?); adopt it with --privileged", ErrCannotAdopt, err)
			}
			return plan, err
		}
	}
	if err := failpoint.Hit("adopt/shifted"); err != nil {
		return plan, err
	}
	moved, err := m.moveUserProfiles(profile, rootUID)
	u.Push("moving the user profiles back", func(context.Context) error {
		var errs []error
		for _, name := range moved {
			errs = append(errs, os.Rename(filepath.Join(profile.UserProfilesDir(), name), filepath.Join(profile.Dir(), "per-user", name)))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return plan, err
	}
	adopted := req.ConfFile + ".adopted-by-nixcell"
	if err := os.Rename(req.ConfFile, adopted); err != nil {
		return plan, fmt.Errorf("retiring %s: %w", req.ConfFile, err)
	}
	u.Push("restoring "+req.ConfFile, func(context.Context) error { return os.Rename(adopted, req.ConfFile) })
	rec.Phase = state.Created
	return plan, m.Store.Save(rec)
}

// readNixosContainerConf reads nixos-container's KEY=VALUE file.
func readNixosContainerConf(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: its configuration %s: %v", ErrCannotAdopt, path, err)
	}
	defer f.Close()
	conf := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %s: %q is not KEY=VALUE", ErrCannotAdopt, path, line)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		conf[k] = strings.Trim(v, "'")
	}
	return conf, s.Err()
}

// settingsOfNixosContainer turns nixos-container's configuration into
// nixcell's settings, refusing (with the list) what nixcell cannot honour.
func settingsOfNixosContainer(conf map[string]string) (spec.Spec, error) {
	var refused []string
	for k, v := range conf {
		if !nixosContainerKeys[k] && v != "" {
			refused = append(refused, fmt.Sprintf("%s=%s", k, v))
		}
	}
	sort.Strings(refused)
	if len(refused) > 0 {
		return spec.Spec{}, fmt.Errorf("%w: nixcell cannot honour %s (nixcell has no extra nspawn flags, moved host interfaces or joined network namespaces; remove them, or recreate the container with nixcell)",
			ErrCannotAdopt, strings.Join(refused, ", "))
	}
	n := map[string]any{}
	switch {
	case conf["PRIVATE_NETWORK"] != "1":
		n["hostNetwork"] = true
	case conf["HOST_BRIDGE"] != "":
		n["bridge"] = conf["HOST_BRIDGE"]
		n["ip"] = conf["LOCAL_ADDRESS"]
		if conf["LOCAL_ADDRESS6"] != "" {
			n["ip6"] = conf["LOCAL_ADDRESS6"]
		}
	default:
		for _, k := range []struct{ conf, spec string }{
			{"HOST_ADDRESS", "hostAddress"}, {"LOCAL_ADDRESS", "localAddress"},
			{"HOST_ADDRESS6", "hostAddress6"}, {"LOCAL_ADDRESS6", "localAddress6"},
		} {
			if v := conf[k.conf]; v != "" {
				n[k.spec] = v
			}
		}
	}
	if v := conf["MACVLANS"]; v != "" {
		n["macvlans"] = strings.Fields(v)
	}
	var forwards []map[string]any
	for _, f := range strings.FieldsFunc(conf["HOST_PORT"], func(r rune) bool { return r == ',' || r == ' ' }) {
		parts := strings.Split(f, ":")
		proto := "tcp"
		if len(parts) == 3 {
			proto, parts = parts[0], parts[1:]
		}
		if len(parts) != 2 {
			return spec.Spec{}, fmt.Errorf("%w: HOST_PORT entry %q is not PROTOCOL:HOSTPORT:CONTAINERPORT", ErrCannotAdopt, f)
		}
		hp, err1 := strconv.Atoi(parts[0])
		cp, err2 := strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil {
			return spec.Spec{}, fmt.Errorf("%w: HOST_PORT entry %q has a port that is not a number", ErrCannotAdopt, f)
		}
		forwards = append(forwards, map[string]any{"protocol": proto, "hostPort": hp, "containerPort": cp})
	}
	if len(forwards) > 0 {
		n["forwardPorts"] = forwards
	}
	settings := map[string]any{"network": n, "autostart": conf["AUTO_START"] == "1"}
	data, err := json.Marshal(settings)
	if err != nil {
		return spec.Spec{}, err
	}
	s, err := spec.Parse(data)
	if err != nil {
		return s, fmt.Errorf("%w: its configuration: %v", ErrCannotAdopt, err)
	}
	return s, nil
}

// processIn returns a process whose root directory is root, 0 when none:
// nixos-container's container still runs there.
func processIn(root string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && r == root {
			return pid
		}
	}
	return 0
}

// userProfilesOf lists what a nixos-container container wrote into its
// profile's per-user directory (which is read-only under nixcell: users'
// profiles live in the container's own place), refusing any other entry
// nix-env did not make there.
func userProfilesOf(p nix.Profile) ([]string, error) {
	entries, err := os.ReadDir(p.Dir())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "system" || name == "system.lock" || strings.HasPrefix(name, "system-") && strings.HasSuffix(name, "-link"):
		case name == "per-user" && e.IsDir():
			sub, err := os.ReadDir(filepath.Join(p.Dir(), name))
			if err != nil {
				return nil, err
			}
			for _, s := range sub {
				out = append(out, s.Name())
			}
		default:
			return nil, fmt.Errorf("%w: its profile %s holds %s, which nixcell's read-only profile cannot keep; move it away first", ErrCannotAdopt, p.Dir(), name)
		}
	}
	return out, nil
}

// moveUserProfiles moves what the per-user directory holds into the
// container's own place, owned by its range, after making the profile's
// directories as nixcell keeps them. It returns what it moved.
func (m *Manager) moveUserProfiles(p nix.Profile, uid int) (moved []string, err error) {
	if err := p.Ensure(uid); err != nil {
		return nil, err
	}
	from := filepath.Join(p.Dir(), "per-user")
	entries, err := os.ReadDir(from)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		to := filepath.Join(p.UserProfilesDir(), e.Name())
		if err := os.Rename(filepath.Join(from, e.Name()), to); err != nil {
			return moved, fmt.Errorf("moving the user profile %s: %w", e.Name(), err)
		}
		moved = append(moved, e.Name())
		if uid != 0 {
			if err := (hostfs.Shift{From: 0, Size: 1 << 16, To: uint32(uid)}).Apply(to); err != nil {
				return moved, err
			}
		}
	}
	return moved, nil
}

// countFiles counts the entries of a tree, without following links.
func countFiles(root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}
