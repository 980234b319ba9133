# The expression nixcell evaluates for every container build. It accepts both
# of nixcloud-container's configuration forms: a NixOS module, or an attribute
# set whose `configuration` is the module and whose other attributes are
# host-side settings. The system is built as nixos-container builds it:
# <nixpkgs/nixos> with the user's module plus a container base module, and the
# modules get the extra arguments `name` and `ip`.
{ name, ip ? "", nameserver ? "", configFile, part ? "system" }:
let
  raw = import (/. + configFile);
  wrapped = builtins.isAttrs raw && raw ? configuration;
  userModule = if wrapped then raw.configuration else raw;
  base = { lib, ... }: {
    boot.isContainer = true;
    networking.hostName = lib.mkDefault name;
    # The host configures the container's interfaces before its init runs.
    networking.useDHCP = false;
    # nixcell's name server on the container's bridge answers for the
    # containers it may reach.
    networking.nameservers = lib.mkDefault (if nameserver == "" then [ ] else [ nameserver ]);
    _module.args = { inherit name ip; };
  };
in
if part == "settings" then
  (if wrapped then builtins.removeAttrs raw [ "configuration" ] else { })
else if part == "host-settings" then
  # A container whose system is given (--system, or a plain root file
  # system) takes only host-side settings.
  (if builtins.isAttrs raw && !(raw ? configuration) then raw
   else throw "this container's system is given (--system or --rootfs), so its configuration is an attribute set of host-side settings only (bindMounts, tmpfs, ephemeral, network, limits, ...), without a NixOS module or `configuration`")
else
  (import <nixpkgs/nixos> { configuration = { imports = [ userModule base ]; }; }).system
