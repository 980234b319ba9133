# eval.nix: a host configuration evaluated with nix/module.nix and the NixOS options it touches
# (nixos-options.nix), with the packages of <nixpkgs> (the stand-in in the tests) and the module
# system of `nixpkgsLib` when given (a nixpkgs checkout's lib/ directory, as nixpkgs.lib
# publishes it), else of <nixpkgs>. What the tests compare:
#   units, wants: systemd.units of the containers (text, wantedBy)
#   etc: the environment.etc entries of nixcell
#   settings: the host-side settings of each container (what spec.Parse reads)
#   failed, warnings: the failed assertions' messages, the warnings
#   host: the other host settings the module makes
#   options: the option tree of nixcell.containers.<name> (name -> { type, sub })
{ configuration, nixpkgsLib ? null }:
let
  pkgs = import <nixpkgs> { };
  lib = if nixpkgsLib == null then pkgs.lib else import nixpkgsLib;
  eval = lib.evalModules {
    modules = [ ../module.nix ./nixos-options.nix configuration ];
    specialArgs = { inherit pkgs; };
  };
  cfg = eval.config;
  declared = import ../containers.nix { inherit lib pkgs; inherit (cfg.services.nixcell) hostOnlySubnet; };
  nixcellEtc = lib.filterAttrs (n: _: lib.hasPrefix "nixcell/" n) cfg.environment.etc;

  # The option tree below an option: each option's type name and, for submodules (also inside
  # attrsOf, listOf, nullOr), the options they hold.
  tree = opts: lib.mapAttrs (_: o:
    if lib.isOption o then { type = o.type.name; sub = tree (o.type.getSubOptions [ ]); }
    else { type = "namespace"; sub = tree o; }) (removeAttrs opts [ "_module" ]);
in
{
  inherit eval;
  units = lib.mapAttrs (_: u: u.text) cfg.systemd.units;
  wants = lib.mapAttrs (_: u: u.wantedBy) cfg.systemd.units;
  etc = lib.mapAttrs (_: e: e.text) nixcellEtc;
  etcSources = lib.mapAttrs (_: e: toString e.source) nixcellEtc;
  settings = lib.mapAttrs (_: declared.settings) cfg.nixcell.containers;
  systems = lib.mapAttrs (_: c: toString c.path) cfg.nixcell.containers;
  failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  inherit (cfg) warnings;
  host = {
    packages = map (p: p.name) cfg.environment.systemPackages;
    inherit (cfg.environment) variables;
    nixcellUser = { inherit (cfg.users.users.nixcell) isSystemUser group subUidRanges subGidRanges; };
    groups = lib.attrNames cfg.users.groups;
    inherit (cfg.boot) kernelModules;
    sysctl = cfg.boot.kernel.sysctl;
    firewall = cfg.networking.firewall.interfaces;
    dhcpcdDeny = cfg.networking.dhcpcd.denyInterfaces;
    inherit (cfg.services.udev) extraRules;
    autostart = cfg.systemd.services.nixcell-autostart.serviceConfig // { inherit (cfg.systemd.services.nixcell-autostart) wantedBy environment; };
    multiUserWants = cfg.systemd.targets.multi-user.wants or [ ];
    activation = cfg.system.activationScripts.nixcell.text;
  };
  options = tree (eval.options.nixcell.containers.type.getSubOptions [ ]);
}
