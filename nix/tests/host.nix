# A sample host configuration with several declared containers, in two generations: from the
# first to the second, each container changes in one way that tells a switch in place from a
# restart (see TestModuleSwitchPlan). `names` lets a test use names of its own.
{ generation ? 1, names ? { } }:
{ lib, pkgs, ... }:
let
  n = name: names.${name} or name;
  two = generation == 2;
  # The stand-in's NixOS system (fixtures/nixpkgs): a web server and an echo service.
  system = label: { services.httpd.enable = true; system.fixture.label = label; };
in
{
  services.nixcell = {
    enable = true;
    internetInterface = "eth0";
    hostOnlySubnet = "10.131.0.0/16";
    ipv6.ulaPrefix = "fd42:1:2::/48";
  };

  nixcell.containers = {
    # Switched in place: a new system and new limits.
    ${n "web"} = {
      autoStart = true;
      config = { ... }: system (if two then "web-2" else "web-1");
      forwardPorts = [ { hostPort = 18080; containerPort = 80; } { protocol = "udp"; hostPort = 18053; } ];
      limits = { memory = if two then "1G" else "512M"; cpus = 1.5; };
      network.enableNat = true;
    };

    # Restarted: a new bind mount.
    ${n "db"} = {
      config = { name, ip, ... }: system "db ${name} ${ip}";
      bindMounts = { "/data" = { hostPath = "/srv/db"; isReadOnly = false; create = true; }; }
        // lib.optionalAttrs two { "/backup".hostPath = "/srv/backup"; };
      tmpfs = [ "/var/cache" ];
      enableTun = true;
      network = { allowPeers = true; ip = "10.131.0.50"; enableIPv6 = false; };
      limits.pids = 500;
    };

    # A private veth pair, a prebuilt system; its network changes but restartIfChanged = false.
    ${n "veth"} = {
      path = (import <nixpkgs/nixos> { configuration = { _module.args = { name = n "veth"; ip = ""; }; } // system "veth"; }).system;
      hostAddress = "10.231.136.1";
      localAddress = if two then "10.231.136.3" else "10.231.136.2";
      restartIfChanged = false;
    };

    # The host's network, privileged, its store closure only: a new system restarts it.
    ${n "shared"} = {
      config = system (if two then "shared-2" else "shared-1");
      privateNetwork = false;
      privileged = true;
      store = "closure";
      ephemeral = true;
      allowedDevices = [ { node = "/dev/fuse"; modifier = "rw"; } ];
    };

    # On a bridge of the host's own, with a macvlan; never started by the tests (no br0 here).
    ${n "lan"} = {
      config = system "lan";
      hostBridge = "br0";
      localAddress = "192.0.2.5/24";
      localAddress6 = "2001:db8::5/64";
      macvlans = [ "eth1" ];
      forwardPorts = [ { hostPort = 18443; containerPort = 443; hostAddress = "127.0.0.1"; } ];
    };
  } // lib.optionalAttrs (!two) {
    # Gone in the second generation.
    ${n "old"} = { config = system "old"; };
  };
}
