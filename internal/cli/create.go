package cli

import (
	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/cell"
)

type createCmd struct {
	*app
	expr       string
	flake      string
	system     string
	nixArgs    string
	privileged bool
	rootfs     string
	init       string
	limits     limitFlags
}

func (a *app) createCommand() *cobra.Command {
	c := &createCmd{app: a}
	cmd := &cobra.Command{
		Use:   "create NAME [CONFIG.nix | -c EXPR | --flake REF#NAME | --system PATH [SETTINGS.nix | -c EXPR] | --rootfs DIR [--init PATH] [SETTINGS.nix | -c EXPR]] [-n NIX-ARGS]",
		Short: "Build a new container's NixOS system (generation 1), or make one of a directory tree",
		Long: `Create builds the container's NixOS system with nix-build, as nixos-container
does (<nixpkgs/nixos> with the configuration plus a container base module), and
makes it generation 1 of /nix/var/nix/profiles/per-container/NAME/system.

The configuration is one of:
  CONFIG.nix     a NixOS module ({ pkgs, name, ip, ... }: { ... }) or
                 nixcloud-container's attribute set { configuration = MODULE;
                 autostart; network; bindMounts; tmpfs; ephemeral; store;
                 limits; ... }
  -c EXPR        the same, inline
  --flake REF#N  the flake's nixosConfigurations.N.config.system.build.toplevel,
                 as nixos-container builds it (N defaults to the container's
                 name; the configuration must set boot.isContainer = true)
  --system PATH  a NixOS system already built in the store; a settings file
                 (or -c) may give it host-side settings: { network = ...;
                 limits = ...; } (no configuration), as the NixOS module does
                 for the containers it declares
  --rootfs DIR   no NixOS system: the directory tree DIR is the container's
                 root, as with systemd-nspawn -D, booted with --init PATH (a
                 path inside DIR, default /sbin/init). It has no profile and
                 no generations; the container sees DIR through an idmapped
                 mount, so files owned by the host's root (a debootstrap
                 tree) are its root's, and what its root writes there is
                 owned by the host's root. DIR is never deleted by nixcell.
                 A settings file (or -c) may give it host-side settings:
                 { ephemeral = true; bindMounts = ...; } (no configuration).

Nix's output streams to stderr while it builds. If anything fails, nothing of
the container is left.

` + limitFlagsHelp + `

--privileged runs the container without a user namespace: its root is the
host's root, kept in check only by the capability bounding set, the seccomp
filter and the device allowlist. Avoid it.`,
		Example: `  nixcell create web ./web.nix -n "-I nixpkgs=/src/nixpkgs"
  nixcell create db -c '{ services.postgresql.enable = true; }'
  nixcell create app --flake /etc/nixos#app
  nixcell create app --system /nix/store/...-nixos-system-app
  nixcell create deb --rootfs /var/lib/machines/deb --init /lib/systemd/systemd
  nixcell create web ./web.nix --memory 512M --cpus 1.5 --pids 2000`,
		Args: func(cmd *cobra.Command, args []string) error {
			return nameArg(1)(cmd, args)
		},
		RunE: c.run,
	}
	f := cmd.Flags()
	f.StringVarP(&c.expr, "config", "c", "", "inline configuration expression")
	f.StringVar(&c.flake, "flake", "", "flake REF#NAME whose nixosConfigurations.NAME to build")
	f.StringVar(&c.system, "system", "", "prebuilt NixOS system store path")
	f.StringVarP(&c.nixArgs, "nix-args", "n", "", `extra Nix arguments, e.g. "-I nixpkgs=/src/nixpkgs"`)
	f.BoolVar(&c.privileged, "privileged", false, "no user namespace: container root is host root (not recommended)")
	f.StringVar(&c.rootfs, "rootfs", "", "boot this directory tree instead of a NixOS system")
	f.StringVar(&c.init, "init", "", "with --rootfs: the init to run, a path inside DIR (default /sbin/init)")
	c.limits.add(cmd)
	return cmd
}

func (c *createCmd) run(cmd *cobra.Command, args []string) error {
	req := cell.CreateRequest{Name: args[0], Expr: c.expr, Flake: c.flake, SystemPath: c.system, Privileged: c.privileged,
		RootFS: c.rootfs, Init: c.init}
	if len(args) > 1 {
		req.ConfigFile = args[1]
	}
	var err error
	if req.NixArgs, err = splitArgs(c.nixArgs); err != nil {
		return usageError{err}
	}
	if req.Limits, err = c.limits.overrides(cmd); err != nil {
		return err
	}
	m, err := c.manager()
	if err != nil {
		return err
	}
	return m.Create(cmd.Context(), req)
}
