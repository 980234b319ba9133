package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/spec"
)

// Copies, snapshots and moves: clone, snapshot, list-snapshots, restore,
// delete-snapshot, export, import.

// twoNames checks SRC and DST names.
func twoNames(cmd *cobra.Command, args []string) error {
	if len(args) != 2 {
		return usageError{fmt.Errorf("give the source and the new container's name (%s)", cmd.Use)}
	}
	for _, n := range args {
		if err := spec.ValidateName(n); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) cloneCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "clone SRC DST",
		Short: "Make a new container that is a copy of another",
		Long: `Clone makes DST a copy of SRC: SRC's generations (the same store paths, in a
profile of its own, with the same numbers), settings and files (its root, its
own GC roots and users' profiles). DST gets an ID range of its own, and the
copied files' owners are shifted into it (setuid and setgid bits, file
capabilities and ACLs kept); it gets addresses of its own and no port forwards
(SRC's would collide; fixed addresses are replaced too: the output says what
changed). Bind mounts are shared, not copied.

A running SRC is frozen (cgroup freezer) while its files are copied, then
thawed; the output says for how long. Files are shared copy-on-write where
the file system can (btrfs, XFS); on ext4 they are copied. DST is left
stopped.`,
		Example: `  nixcell clone web web-test && nixcell start web-test`,
		Args:    twoNames,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		p := a.progress()
		res, err := m.Clone(cmd.Context(), cell.CloneRequest{Source: args[0], Name: args[1], Progress: p.report()})
		p.end()
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(a.stdout, res)
		}
		if !a.quiet {
			frozen := ""
			if res.Frozen > 0 {
				frozen = fmt.Sprintf(", %s frozen %s", res.Source, roundDuration(res.Frozen))
			}
			fmt.Fprintf(a.stderr, "%s: cloned from %s: %d generations (current %d), %s%s; addresses %s %s (%s)\n",
				res.Name, res.Source, res.Generations, res.Generation, res.Copied.Summary, frozen, orDash(res.IPv4), res.IPv6, roundDuration(res.Took))
		}
		return nil
	}
	return cmd
}

func roundDuration(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func (a *app) snapshotCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "snapshot NAME [TAG]",
		Short: "Keep the container's root and current generation under a tag",
		Long: `Snapshot keeps a copy of the container's root and the generation that is
current under TAG (default snapN, the first free N), and prints the tag. A
running container is frozen while its root is copied. The copy shares
extents with the root where the file system can (reflinks on btrfs and XFS)
and is a full copy otherwise (ext4). The generation is kept from the garbage
collector as long as the snapshot exists. restore brings both back.`,
		Args: nameArg(1),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		tag := ""
		if len(args) > 1 {
			tag = args[1]
		}
		p := a.progress()
		info, err := m.Snapshot(cmd.Context(), args[0], tag, p.report())
		p.end()
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(a.stdout, info)
		}
		fmt.Fprintln(a.stdout, info.Tag)
		if !a.quiet {
			fmt.Fprintf(a.stderr, "%s: snapshot %s: generation %d, %d files, %s (%s new on disk)\n",
				args[0], info.Tag, info.Generation, info.Files, cell.FormatBytes(info.Bytes), cell.FormatBytes(info.Bytes-info.Cloned))
		}
		return nil
	}
	return cmd
}

func (a *app) listSnapshotsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list-snapshots NAME [--json]",
		Short: "List the container's snapshots: TAG CREATED GENERATION FILES SIZE",
		Long: `List-snapshots lists the snapshots of the container, oldest first: each tag,
when it was made, the generation it keeps, and its root's files and size.
Snapshots live in the container's state directory and go when it is
destroyed; they are not exported.`,
		Args: nameArg(0),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		snaps, err := m.ListSnapshots(args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(a.stdout, snaps)
		}
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TAG\tCREATED\tGENERATION\tFILES\tSIZE")
		for _, s := range snaps {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", s.Tag, s.CreatedAt.Local().Format("2006-01-02 15:04:05"), s.Generation, s.Files, cell.FormatBytes(s.Bytes))
		}
		return w.Flush()
	}
	return cmd
}

func (a *app) restoreCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore NAME TAG",
		Short: "Bring back a snapshot's root and generation",
		Long: `Restore brings back what snapshot TAG kept: the root as it was (it replaces the
current root atomically) and the generation that was current, which becomes
current again as a new generation of the profile (unless it is current
already; the generations made since stay, so rollback works as usual). A
running container is stopped first and started again after. If the restore
fails, the container is as it was; if it is killed, the next command on the
container finishes it (or, killed while copying, forgets it).`,
		Args: nameArg(1),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) != 2 {
			return usageError{errors.New("give the snapshot's tag (nixcell list-snapshots NAME)")}
		}
		m, err := a.manager()
		if err != nil {
			return err
		}
		p := a.progress()
		res, err := m.Restore(cmd.Context(), args[0], args[1], p.report())
		p.end()
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(a.stdout, res)
		}
		if !a.quiet {
			gen := fmt.Sprintf("generation %d (current already)", res.Generation)
			if res.New {
				gen = fmt.Sprintf("new generation %d", res.Generation)
			}
			again := ""
			if res.Restarted {
				again = ", restarted"
			}
			fmt.Fprintf(a.stderr, "%s: restored snapshot %s: %s, root %s%s (%s)\n", args[0], res.Tag, gen, res.Copied.Summary, again, roundDuration(res.Took))
		}
		return nil
	}
	return cmd
}

func (a *app) deleteSnapshotCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-snapshot NAME TAG",
		Short: "Delete a snapshot",
		Long: `Delete-snapshot removes snapshot TAG of the container: its copy of the root
and its hold on its generation, which the garbage collector may then take
unless the container's profile still has it.`,
		Args: nameArg(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{errors.New("give the snapshot's tag (nixcell list-snapshots NAME)")}
			}
			m, err := a.manager()
			if err != nil {
				return err
			}
			return m.DeleteSnapshot(cmd.Context(), args[0], args[1])
		},
	}
}

func (a *app) exportCommand() *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "export NAME [-o FILE|-]",
		Short: "Write the container as one archive, to move or back it up",
		Long: `Export writes the container as one compressed archive: its settings (and its
configuration file, when it is one file), its current generation's closure
as nix-store --export writes it, its root with owners relative to its ID
range, and its addresses, checked as a whole by a checksum at its end.
import makes a container of it, here or on another host. A running container
is frozen while its root is copied aside (copy-on-write where the file
system can), then thawed before the archive is written.

The default FILE is NAME.nixcell.tar.gz; "-" writes to stdout, to stream:
  nixcell export web -o - | ssh other nixcell import -
A FILE is written under a temporary name and renamed when complete.`,
		Args: nameArg(0),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the archive to write, or - for stdout (default NAME.nixcell.tar.gz)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON (on stderr when the archive goes to stdout)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		if out == "" {
			out = args[0] + ".nixcell.tar.gz"
		}
		w, commit, err := a.archiveOutput(out)
		if err != nil {
			return err
		}
		p := a.progress()
		res, err := m.Export(cmd.Context(), cell.ExportRequest{Name: args[0], Out: w, Progress: p.report()})
		p.end()
		if err = commit(err); err != nil {
			return err
		}
		results := a.stdout
		if out == "-" {
			results = a.stderr
		}
		if asJSON {
			return printJSON(results, res)
		}
		if !a.quiet {
			fmt.Fprintf(a.stderr, "%s: exported generation %d (%d store paths, %s) and its root (%s) to %s (%s)\n",
				res.Name, res.Generation, res.StorePaths, cell.FormatBytes(res.ClosureBytes), res.Root.Summary, out, roundDuration(res.Took))
		}
		return nil
	}
	return cmd
}

// archiveOutput opens where an export goes; commit, given the export's
// error, renames a file into place or removes it. The archive is written
// as .FILE.partial-N beside FILE, locked while it is written: what an
// export that was killed left there, nobody holds, and the next export to
// FILE removes it.
func (a *app) archiveOutput(out string) (io.Writer, func(error) error, error) {
	if out == "-" {
		return a.stdout, func(err error) error { return err }, nil
	}
	prefix := "." + filepath.Base(out) + ".partial-"
	removeKilledPartials(filepath.Dir(out), prefix)
	f, err := os.CreateTemp(filepath.Dir(out), prefix)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, err
	}
	return f, func(err error) error {
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(f.Name(), 0o600)
		}
		if err == nil {
			err = os.Rename(f.Name(), out)
		}
		if err != nil {
			os.Remove(f.Name())
		}
		return err
	}, nil
}

// removeKilledPartials removes the files named prefix+N in dir that no
// export holds: those of exports that were killed. Best effort: what it
// cannot remove stays, as before.
func removeKilledPartials(dir, prefix string) {
	found, _ := filepath.Glob(filepath.Join(dir, globEscape(prefix)+"*"))
	for _, p := range found {
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = os.Remove(p)
		}
		f.Close()
	}
}

// globEscape quotes the characters filepath.Match treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (a *app) importCommand() *cobra.Command {
	var noCheckSigs, trustSettings, asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE|- [NAME]",
		Short: "Make a container of an archive that export wrote",
		Long: `Import makes a container of an export's archive (FILE, or stdin for "-"),
named as in the archive or NAME. The whole archive is checked first, so a
truncated, corrupted or untrusted one is refused and nothing changes:

- its checksum, the order and names of its members and its root's entries;
- every store path of the closure: its content (NAR hash and size) must be
  the one described, and, for the paths this host's store lacks, when this
  host's Nix has require-sigs = true (Nix's default), a signature by a key
  in its trusted-public-keys (nix-store --import itself checks none).
  --no-check-sigs skips the signatures, as nix copy --no-check-sigs;
- its settings: the archive's checksum proves it whole, not who made it, so
  settings that reach into this host (privileged, bind mounts of host paths,
  allowed devices, the host's network, a host bridge or macvlan) are refused
  unless --trust-settings says whoever made the archive may have them.

Then the closure is imported into the store, the generation becomes
generation 1 of the container's profile, its root's owners are shifted into
an ID range allocated here, and it keeps its addresses when they are free
here (otherwise it gets new ones: the output says which). A stream is kept in
an unnamed temporary file in the state directory while it is checked. If the
import fails, it is undone; if it is killed, the next create, clone, import
or destroy of the name cleans up.`,
		Example: `  nixcell import web.nixcell.tar.gz web2
  ssh old nixcell export web -o - | nixcell import -`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageError{errors.New("give the archive (a file, or - for stdin)")}
			case len(args) > 2:
				return usageError{fmt.Errorf("unexpected argument %q", args[2])}
			case len(args) == 2:
				return spec.ValidateName(args[1])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noCheckSigs, "no-check-sigs", false, "import store paths that no trusted key signed")
	cmd.Flags().BoolVar(&trustSettings, "trust-settings", false, "import settings that reach into this host (privileged, bind mounts, devices, host networks)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		m, err := a.manager()
		if err != nil {
			return err
		}
		req := cell.ImportRequest{NoCheckSigs: noCheckSigs, TrustSettings: trustSettings}
		if len(args) > 1 {
			req.Name = args[1]
		}
		if args[0] == "-" {
			req.In = os.Stdin
		} else {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			req.In = f
		}
		p := a.progress()
		req.Progress = p.report()
		res, err := m.Import(cmd.Context(), req)
		p.end()
		if err != nil {
			return fmt.Errorf("archive %s: %w", args[0], err)
		}
		if asJSON {
			return printJSON(a.stdout, res)
		}
		if !a.quiet {
			for _, c := range res.Changed {
				fmt.Fprintf(a.stderr, "%s: %s\n", res.Name, c)
			}
			addr := "kept its address"
			if !res.KeptAddress {
				addr = "has a new address"
			}
			fmt.Fprintf(a.stderr, "%s: imported %s: generation %d, %d store paths (%d new here), root %s; %s %s %s (%s)\n",
				res.Name, res.Exported, res.Generation, res.StorePaths, res.Imported, res.Root.Summary, addr, orDash(res.IPv4), res.IPv6, roundDuration(res.Took))
		}
		return nil
	}
	return cmd
}
