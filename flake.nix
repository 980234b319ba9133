{
  description = "nixcell: unprivileged NixOS system containers sharing the host's Nix store";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { nixpkgs, ... }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        nixcell = pkgs.callPackage ./nix/package.nix { };
        default = nixcell;
      });

      overlays.default = final: prev: {
        nixcell = final.callPackage ./nix/package.nix { };
      };

      # services.nixcell and nixcell.containers.<name>. The package is built with the host's
      # nixpkgs, as its containers are.
      nixosModules.default = ./nix/module.nix;
    };
}
