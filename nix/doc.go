// Package nixfiles holds the tests of nixcell's Nix files: the package
// (package.nix, default.nix, flake.nix), the NixOS module (module.nix,
// containers.nix) and what the module installs (apply-declared.sh,
// activate.sh). They evaluate and build with the stand-in nixpkgs in
// fixtures/nixpkgs; with NIXCELL_TEST_NIXPKGS_LIB set to a nixpkgs lib/
// directory (scripts/test-module-real-lib.sh) the module tests also run on
// nixpkgs' own module system.
package nixfiles
