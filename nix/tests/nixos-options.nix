# The NixOS options nix/module.nix touches, declared as NixOS declares them (names, types,
# defaults; only the parts the module uses), so that the module can be evaluated without a full
# nixpkgs: by the stand-in's module system (CI) or nixpkgs' own lib (scripts/test-module-real-lib.sh).
# A real NixOS evaluation is what checks them against the real declarations.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  strs = opt (types.listOf types.str) [ ];
in
{
  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = opt (types.listOf types.str) [ ];

    environment.systemPackages = opt (types.listOf types.package) [ ];
    environment.variables = opt (types.attrsOf (types.either types.str (types.listOf types.str))) { };
    environment.etc = opt
      (types.attrsOf (types.submodule ({ name, config, ... }: {
        options = {
          enable = opt types.bool true;
          text = opt (types.nullOr types.lines) null;
          source = mkOption { type = types.path; };
          mode = opt types.str "symlink";
        };
        config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText (baseNameOf name) config.text));
      })))
      { };

    users.users = opt
      (types.attrsOf (types.submodule {
        options = {
          isSystemUser = opt types.bool false;
          group = opt types.str "";
          description = opt types.str "";
          subUidRanges = opt (types.listOf (types.submodule { options = { startUid = mkOption { type = types.int; }; count = opt types.int 1; }; })) [ ];
          subGidRanges = opt (types.listOf (types.submodule { options = { startGid = mkOption { type = types.int; }; count = opt types.int 1; }; })) [ ];
        };
      }))
      { };
    users.groups = opt (types.attrsOf (types.submodule { options.gid = opt (types.nullOr types.int) null; })) { };

    boot.kernelModules = strs;
    boot.kernel.sysctl = opt (types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]))) { };

    networking.firewall.interfaces = opt
      (types.attrsOf (types.submodule {
        options = {
          allowedTCPPorts = opt (types.listOf types.port) [ ];
          allowedUDPPorts = opt (types.listOf types.port) [ ];
        };
      }))
      { };
    networking.dhcpcd.denyInterfaces = strs;
    networking.networkmanager.enable = opt types.bool false;
    networking.nftables.enable = opt types.bool false;
    networking.nftables.flushRuleset = opt types.bool false;
    services.udev.extraRules = opt types.lines "";
    security.allowUserNamespaces = opt types.bool true;

    nix.package = opt types.package pkgs.nix;
    systemd.package = opt types.package pkgs.systemd;
    systemd.services = opt
      (types.attrsOf (types.submodule {
        options = {
          description = opt types.str "";
          wantedBy = strs;
          wants = strs;
          after = strs;
          environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
          path = opt (types.listOf (types.either types.package types.str)) [ ];
          serviceConfig = opt (types.attrsOf types.unspecified) { };
        };
      }))
      { };
    systemd.units = opt
      (types.attrsOf (types.submodule {
        options = {
          text = opt (types.nullOr types.str) null;
          enable = opt types.bool true;
          wantedBy = strs;
        };
      }))
      { };
    systemd.targets = opt (types.attrsOf (types.submodule { options.wants = strs; })) { };
    system.activationScripts = opt
      (types.attrsOf (types.either types.str (types.submodule {
        options = {
          text = mkOption { type = types.lines; };
          deps = strs;
          supportsDryActivation = opt types.bool false;
        };
      })))
      { };
  };
}
