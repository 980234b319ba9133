# The sample host (host.nix) rendered in both its generations (render.nix), for the systemd
# guest tier: install gen1, start the units, install gen2, run gen2/activate.sh and do what
# switch-to-configuration does (daemon-reload, then reload or restart each changed unit).
#   nix-build -I nixpkgs=fixtures/nixpkgs nix/tests/units.nix -A gen1
{ }:
{
  gen1 = import ./render.nix { configuration = import ./host.nix { generation = 1; }; };
  gen2 = import ./render.nix { configuration = import ./host.nix { generation = 2; }; };
}
