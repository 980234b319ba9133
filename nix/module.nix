# nixcell's NixOS module.
#
# services.nixcell prepares the host: the tool, the subordinate ID range of the user `nixcell`,
# forwarding, the firewall and DHCP around nixcell's bridges, and the bridges' subnets and
# prefixes and the uplink (host settings, passed to nixcell as environment variables: see
# hostEnvironment, the one place they are made).
#
# nixcell.containers.<name> declares containers (nix/containers.nix): each is a unit
# nixcell@NAME.service that keeps the container at the declared system and settings, as
# generations of its profile. A changed system or limits reload the unit, which switches the
# running container in place; changes that need a restart restart it (its X-Restart-Triggers).
# The units are written whole (systemd.units.<name>.text) and point to fixed paths only
# (/run/current-system/sw/bin/nixcell, /etc/nixcell/...), so that nothing but a change of the
# container itself changes them: an upgrade of nixcell or of the host's packages neither
# restarts nor reloads a container.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkIf mkMerge mkOption types;
  cfg = config.services.nixcell;
  declared = import ./containers.nix { inherit lib pkgs; inherit (cfg) hostOnlySubnet; };

  # The host settings, as the environment variables nixcell reads them when an instance first
  # creates a container (see README, Networking). The one place they are made.
  hostEnvironment = lib.filterAttrs (_: v: v != null) {
    NIXCELL_HOSTONLY_SUBNET = cfg.hostOnlySubnet;
    NIXCELL_NAT_SUBNET = cfg.natSubnet;
    NIXCELL_ULA_PREFIX = cfg.ipv6.ulaPrefix;
    NIXCELL_NAT_IPV6_PREFIX = if cfg.ipv6.prefix == null then null else "${cfg.ipv6.prefix}/${toString cfg.ipv6.prefixLength}";
    NIXCELL_UPLINK = cfg.internetInterface;
  };

  # The default instance's bridges and the prefix of its containers' host interfaces
  # (internal/network: NewSettings, HostIfName).
  bridges = [ "nc-hostonly" "nc-internet" ];
  portPattern = "nc${builtins.substring 0 4 (builtins.hashString "sha256" "nixcell")}*";

  bin = "/run/current-system/sw/bin/nixcell";
  stateDir = "/var/lib/nixcell";
  toolPath = lib.makeBinPath [ config.nix.package pkgs.nftables pkgs.coreutils ];

  applyDeclared = pkgs.writeScript "nixcell-apply-declared"
    ("#!${pkgs.runtimeShell}\n" + builtins.readFile ./apply-declared.sh);

  settingsFile = name: c:
    let json = pkgs.writeText "nixcell-${name}-settings.json" (builtins.toJSON (declared.settings c));
    in pkgs.writeText "nixcell-${name}-settings.nix" "builtins.fromJSON (builtins.readFile ${json})\n";

  # /etc/nixcell/containers/NAME.conf: what the unit's commands read.
  confText = name: c: lib.concatStrings (lib.mapAttrsToList (k: v: "${k}=${v}\n") ({
    NIXCELL_SYSTEM = toString c.path;
    NIXCELL_SETTINGS = "${settingsFile name c}";
    PATH = toolPath;
  } // hostEnvironment));

  # The unit of a declared container. autoStart is its wantedBy (links, not [Install]), so that
  # turning it on or off changes nothing in the unit and restarts nothing.
  unitText = name: c:
    let
      mounts = [ stateDir ] ++ lib.concatMap (b: lib.optional (!b.create) (if b.hostPath == null then b.mountPoint else b.hostPath)) (lib.attrValues c.bindMounts);
    in
    ''
      [Unit]
      Description=nixcell container ${name}
      Documentation=man:nixcell-run(1)
      After=network.target nftables.service
      Wants=network.target
      RequiresMountsFor=${lib.concatStringsSep " " mounts}
      X-Reload-Triggers=${toString c.path} ${settingsFile name c}
      X-Restart-Triggers=${declared.restartKey c (toString c.path)}

      [Service]
      Type=notify
      NotifyAccess=main
      EnvironmentFile=/etc/nixcell/containers/${name}.conf
      ExecStartPre=/etc/nixcell/apply-declared prepare ${name}
      ExecStart=${bin} run --timeout 80s ${name}
      ExecReload=/etc/nixcell/apply-declared reload ${name}
      Delegate=yes
      Slice=machine.slice
      KillMode=mixed
      KillSignal=SIGTERM
      TimeoutStartSec=${c.timeoutStartSec}
      TimeoutStopSec=90s
      Restart=on-failure
      RestartForceExitStatus=133
      SuccessExitStatus=133
      X-StopIfChanged=false
    '' + lib.optionalString (!c.restartIfChanged) ''
      X-RestartIfChanged=false
    '';

  anyAutoStart = lib.any (c: c.autoStart) (lib.attrValues config.nixcell.containers);
in
{
  options.services.nixcell = {
    enable = mkOption {
      type = types.bool;
      default = config.nixcell.containers != { };
      defaultText = lib.literalExpression "config.nixcell.containers != { }";
      description = "Whether to install nixcell and prepare the host for its containers.";
    };
    package = mkOption {
      type = types.package;
      default = pkgs.nixcell or (pkgs.callPackage ./package.nix { });
      defaultText = lib.literalExpression "pkgs.nixcell (the flake's overlay), else pkgs.callPackage <nixcell/nix/package.nix> { }";
      description = "The nixcell package.";
    };
    idRange = {
      start = mkOption {
        type = types.ints.u32;
        default = 268435456;
        description = ''
          First host ID delegated to the user `nixcell` in /etc/subuid and /etc/subgid: nixcell
          gives each unprivileged container 65536 IDs from this range. The default (2^28) stays
          clear of the ranges NixOS gives users automatically.
        '';
      };
      count = mkOption {
        type = types.ints.positive;
        default = 65536 * 4096;
        description = "Number of IDs delegated: 65536 per container.";
      };
    };
    hostOnlySubnet = mkOption {
      type = types.str;
      default = "10.101.0.0/16";
      description = "IPv4 subnet of the host-only bridge (nc-hostonly). Fixed when nixcell first creates a container.";
    };
    natSubnet = mkOption {
      type = types.str;
      default = "10.102.0.0/16";
      description = "IPv4 subnet of the NAT bridge (nc-internet). Fixed when nixcell first creates a container.";
    };
    internetInterface = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "enp0s3";
      description = "The uplink the NAT bridge goes out of (nixcloud-container's option of the same name); null: the interface of the default route.";
    };
    ipv6 = {
      ulaPrefix = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "fd12:3456:789a::/48";
        description = "The host's unique local /48, whose subnets 1 and 2 the bridges use; null: a random one, chosen when nixcell first creates a container.";
      };
      prefix = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "2001:db8:0:1::";
        description = "A routable IPv6 prefix for the NAT bridge (routed, not masqueraded; the uplink must route it to this host), as nixcloud-container's ipv6.ipv6Prefix; null: the ULA, masqueraded.";
      };
      prefixLength = mkOption {
        type = types.ints.between 1 128;
        default = 64;
        description = "Length of ipv6.prefix; nixcell takes a /64.";
      };
    };
    forwarding = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to turn on IPv4 and IPv6 forwarding at boot (nixcell otherwise does when a container needs it), keeping router advertisements accepted on internetInterface.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to let containers reach nixcell's name server (port 53) on its bridges through the host's firewall.";
    };
    autostart = mkOption {
      type = types.bool;
      default = true;
      description = "Whether `nixcell autostart` starts, at boot, the containers made on the command line with autostart = true (declared ones have autoStart).";
    };
  };

  options.nixcell.containers = mkOption {
    type = types.attrsOf (types.submodule declared.module);
    default = { };
    example = lib.literalExpression ''
      {
        web = {
          config = { pkgs, ... }: { services.nginx.enable = true; };
          autoStart = true;
          forwardPorts = [ { hostPort = 8080; containerPort = 80; } ];
          limits = { memory = "512M"; cpus = 1.5; };
        };
      }
    '';
    description = ''
      NixOS system containers run by nixcell, each a unit nixcell@NAME.service, with
      nixos-container's options wherever they mean the same. A change of a container's system or
      limits switches it in place on `nixos-rebuild switch`; other changes restart it.
    '';
  };

  config = mkMerge [
    {
      assertions = [ {
        assertion = cfg.enable || config.nixcell.containers == { };
        message = "nixcell.containers is set but services.nixcell.enable is false: the containers would not run";
      } ];
    }

    (mkIf cfg.enable {
      assertions =
        lib.concatLists (lib.mapAttrsToList (name: c: map (message: { assertion = false; inherit message; }) (declared.unsupported name c)) config.nixcell.containers)
        ++ [
          {
            assertion = cfg.ipv6.prefix == null || cfg.ipv6.prefixLength == 64;
            message = "services.nixcell.ipv6.prefixLength: nixcell's NAT bridge takes a /64, not a /${toString cfg.ipv6.prefixLength}";
          }
          {
            assertion = config.security.allowUserNamespaces;
            message = "services.nixcell: nixcell's unprivileged containers need user namespaces (security.allowUserNamespaces = true)";
          }
        ];
      warnings = lib.optional (config.networking.nftables.enable && (config.networking.nftables.flushRuleset or false))
        "services.nixcell: networking.nftables.flushRuleset removes nixcell's tables whenever nftables.service reloads; containers then lose NAT, forwards and isolation until one starts or stops";

      environment.systemPackages = [ cfg.package pkgs.nftables ]; # nft list table inet nixcell
      environment.variables = hostEnvironment;

      users.users.nixcell = {
        isSystemUser = true;
        group = "nixcell";
        description = "nixcell: owner of the containers' ID ranges";
        subUidRanges = [ { startUid = cfg.idRange.start; inherit (cfg.idRange) count; } ];
        subGidRanges = [ { startGid = cfg.idRange.start; inherit (cfg.idRange) count; } ];
      };
      users.groups.nixcell = { };

      boot.kernelModules = [ "bridge" "veth" "macvlan" ];
      boot.kernel.sysctl = mkIf cfg.forwarding ({
        "net.ipv4.ip_forward" = lib.mkDefault 1;
        "net.ipv6.conf.all.forwarding" = lib.mkDefault 1;
      } // lib.optionalAttrs (cfg.internetInterface != null) {
        "net.ipv6.conf.${cfg.internetInterface}.accept_ra" = lib.mkDefault 2;
      });

      networking.firewall.interfaces = mkIf cfg.openFirewall (lib.genAttrs bridges (_: {
        allowedUDPPorts = [ 53 ];
        allowedTCPPorts = [ 53 ];
      }));
      networking.dhcpcd.denyInterfaces = bridges ++ [ portPattern ];
      services.udev.extraRules = mkIf config.networking.networkmanager.enable ''
        # nixcell's bridges and container interfaces are its own.
        ENV{INTERFACE}=="nc-hostonly|nc-internet|${portPattern}", ENV{NM_UNMANAGED}="1"
      '';

      systemd.services.nixcell-autostart = mkIf cfg.autostart {
        description = "nixcell containers with autostart = true";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        environment = hostEnvironment;
        path = [ config.nix.package pkgs.nftables ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${bin} autostart";
        };
      };

      system.activationScripts.nixcell = {
        supportsDryActivation = true;
        text = ''
          SYSTEMCTL=${config.systemd.package}/bin/systemctl ${pkgs.runtimeShell} ${./activate.sh} \
            /run/current-system/etc/systemd/system "$systemConfig/etc/systemd/system"
        '';
      };
    })

    (mkIf (cfg.enable && config.nixcell.containers != { }) {
      environment.etc = {
        "nixcell/apply-declared".source = applyDeclared;
      } // lib.mapAttrs' (name: c: lib.nameValuePair "nixcell/containers/${name}.conf" { text = confText name c; }) config.nixcell.containers;

      systemd.units = lib.mapAttrs' (name: c: lib.nameValuePair "nixcell@${name}.service" {
        text = unitText name c;
        wantedBy = lib.optional c.autoStart "machines.target";
      }) config.nixcell.containers;
      systemd.targets.multi-user.wants = lib.optional anyAutoStart "machines.target";
    })
  ];
}
