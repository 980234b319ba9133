# nixcell for users without flakes: `nix-build` builds the package; the NixOS module is
# ./nix/module.nix (imports = [ <nixcell/nix/module.nix> ]; see README, "NixOS module").
{ pkgs ? import <nixpkgs> { } }:
pkgs.callPackage ./nix/package.nix { }
