# render.nix: the files a host configuration's nixcell part installs, as a directory (built
# with nix-build), for tests that run them outside NixOS (e2e, the systemd guest):
#   etc/systemd/system/nixcell@NAME.service   the units, as NixOS writes systemd.units.<name>.text
#   etc/systemd/system/machines.target.wants/ links of the units with autoStart
#   etc/nixcell/containers/NAME.conf          the units' environment files
#   etc/nixcell/apply-declared                their ExecStartPre and ExecReload
#   activate.sh                               nixcell's part of the activation (nix/activate.sh)
# A host without NixOS also needs /run/current-system/sw/bin/nixcell (the units' ExecStart).
{ configuration, nixpkgsLib ? null }:
let
  pkgs = import <nixpkgs> { };
  inherit (pkgs) lib;
  e = import ./eval.nix { inherit configuration nixpkgsLib; };
  units = e.units;
in
if e.failed != [ ] then throw "render.nix: failed assertions: ${lib.concatStringsSep "; " e.failed}"
else pkgs.runCommand "nixcell-units" {
  # name<TAB>path lines: the files to copy in, from the store.
  files = lib.concatStrings (lib.mapAttrsToList (n: src: "etc/${n}\t${src}\n") e.etcSources
    ++ lib.mapAttrsToList (n: text: "etc/systemd/system/${n}\t${pkgs.writeText (lib.replaceStrings [ "@" ] [ "-" ] n) text}\n") units
    ++ [ "activate.sh\t${../activate.sh}\n" ]);
  wants = lib.concatStringsSep " " (lib.attrNames (lib.filterAttrs (_: w: lib.elem "machines.target" w) e.wants));
} ''
  printf '%s' "$files" | while IFS="$(printf '\t')" read -r name src; do
    mkdir -p "$out/$(dirname "$name")"
    cp "$src" "$out/$name"
  done
  mkdir -p "$out/etc/systemd/system/machines.target.wants"
  for u in $wants; do ln -s "../$u" "$out/etc/systemd/system/machines.target.wants/$u"; done
''
