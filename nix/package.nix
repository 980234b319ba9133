# The nixcell package, for nixpkgs' callPackage: the binary (cgo, with libseccomp and the
# `seccomp` build tag, as scripts/build.sh builds it), its shell completions (bash, zsh, fish)
# and man pages, generated from the command line by cmd/nixcell-docs at build time.
#
# vendorHash is the hash of `go mod vendor`: scripts/update-vendor-hash.sh renews it, and
# TestVendorHash (nix/) fails when it is stale.
{ lib, buildGoModule, pkg-config, libseccomp }:

buildGoModule {
  pname = "nixcell";
  version = "0.1.0-dev";

  # Only what the Go build reads, so that docs, scripts and fixtures do not rebuild it. e2e is
  # a package of the module too: `go mod vendor` vendors what its tests import.
  src = lib.cleanSourceWith {
    name = "nixcell-source";
    src = ../.;
    filter = path: type:
      let rel = lib.removePrefix (toString ../. + "/") (toString path);
      in lib.any (top: rel == top || lib.hasPrefix "${top}/" rel) [ "go.mod" "go.sum" "cmd" "internal" "e2e" ];
  };

  vendorHash = "sha256-ZXjRRazw7sbSMeoYLN3phYZdPgxIqDNcIcYoEIybrIY=";

  subPackages = [ "cmd/nixcell" "cmd/nixcell-docs" ];
  tags = [ "seccomp" ];
  ldflags = [ "-s" "-w" ];
  env.CGO_ENABLED = 1;
  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ libseccomp ];

  # The tests need root, namespaces, cgroups and Nix itself: scripts/test.sh runs them.
  doCheck = false;

  postInstall = ''
    "$out/bin/nixcell-docs" "$out"
    rm "$out/bin/nixcell-docs"
  '';

  meta = {
    description = "Unprivileged NixOS system containers sharing the host's Nix store";
    license = lib.licenses.asl20;
    mainProgram = "nixcell";
    platforms = lib.platforms.linux;
  };
}
