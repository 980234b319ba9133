# One declared container, nixcell.containers.<name>: its options (nixos-container's names and
# meanings wherever they mean the same, plus nixcell's own), the host-side settings nixcell
# reads from them (the attribute set form of a configuration file, parsed by
# internal/spec.Parse), what of them needs a restart, and what nixcell cannot honour.
#
# nix/tests (TestOptionsMatchSpec) compares these options with internal/spec both ways.
{ lib, pkgs, hostOnlySubnet }:
let
  inherit (lib) mkOption types;
  inherit (builtins) attrNames concatMap elem filter head isString length listToAttrs match
    removeAttrs split toJSON;

  nullOrStr = example: description: mkOption { type = types.nullOr types.str; default = null; inherit example description; };
  withoutNulls = attrs: lib.filterAttrs (_: v: v != null) attrs;
  addressOf = s: head (split "/" s);

  # The first address of an IPv4 subnet "a.b.c.d/len": the host-only bridge's own address,
  # nixcell's name server there.
  firstAddress = cidr:
    let
      parts = split "/" cidr;
      octets = map lib.toInt (filter isString (split "\\." (head parts)));
      len = lib.toInt (lib.last parts);
      n = lib.foldl' (a: o: a * 256 + o) 0 octets;
      size = lib.foldl' (a: _: a * 2) 1 (lib.range 1 (32 - len));
      gw = n - lib.mod n size + 1;
      byte = k: toString (lib.mod (gw / k) 256);
    in
    "${byte 16777216}.${byte 65536}.${byte 256}.${byte 1}";

  bindMountOptions = { name, ... }: {
    options = {
      mountPoint = mkOption { type = types.str; default = name; example = "/mnt/usb"; description = "Mount point in the container."; };
      hostPath = nullOrStr "/home/alice" "The host path to mount; null: the same path as the mount point.";
      isReadOnly = mkOption { type = types.bool; default = true; description = "Whether the container sees it read-only."; };
      create = mkOption { type = types.bool; default = false; description = "nixcell: create a missing host path (mode 0755, owned by the container's root for a read-write mount, by the host's root otherwise) instead of failing the start."; };
      writeAsHostRoot = mkOption {
        type = types.bool;
        default = false;
        description = "nixcell: show a read-write host path through the container's ID mapping, so host IDs appear as themselves inside and the container's root writes there as the host's root. Host users who can reach the path could then run setuid programs the container plants; keep it below a directory only root can enter. Without it, the container's files there belong to its own ID range.";
      };
    };
  };
  forwardPortOptions = {
    options = {
      protocol = mkOption { type = types.enum [ "tcp" "udp" ]; default = "tcp"; description = "The protocol of the forward."; };
      hostPort = mkOption { type = types.port; description = "The port on the host."; };
      containerPort = mkOption { type = types.nullOr types.port; default = null; description = "The port in the container; null: hostPort."; };
      hostAddress = nullOrStr "192.0.2.10" "nixcell: the host address the forward listens on; null: every address.";
    };
  };
  # How a container is networked.
  mode = c:
    if !c.privateNetwork then "host"
    else if c.hostBridge != null then "hostBridge"
    else if c.hostAddress != null || c.hostAddress6 != null || c.localAddress != null || c.localAddress6 != null then "veth"
    else "nixcell";

  # What every configuration gets, as the nixcell command line adds it to a configuration file
  # (internal/nix/container.nix): the container basics, nixcell's name server on its host-only
  # bridge, and the module arguments `name` and `ip` (its IPv4 address when fixed here, else "",
  # since nixcell assigns it at create). The system is the host's, as nixos-container does.
  baseModule = name: c: { options, ... }: {
    config = {
      nixpkgs = if options ? nixpkgs && options.nixpkgs ? hostPlatform
        then { inherit (pkgs.stdenv) hostPlatform; }
        else { localSystem = pkgs.stdenv.hostPlatform; };
      boot.isContainer = true;
      networking.hostName = lib.mkDefault name;
      networking.useDHCP = false;
      networking.nameservers = lib.mkIf (mode c == "nixcell") (lib.mkDefault [ (firstAddress hostOnlySubnet) ]);
      _module.args = {
        inherit name;
        ip =
          if elem (mode c) [ "hostBridge" "veth" ] && c.localAddress != null then addressOf c.localAddress
          else if mode c == "nixcell" && c.network.ip != null then addressOf c.network.ip
          else "";
      };
    };
  };

  settings = c:
    let
      m = mode c;
      network =
        if m == "host" then { hostNetwork = true; }
        else withoutNulls {
          bridge = c.hostBridge;
          ip = if m == "hostBridge" then c.localAddress else c.network.ip;
          ip6 = if m == "hostBridge" then c.localAddress6 else c.network.ip6;
          hostAddress = if m == "veth" then c.hostAddress else null;
          localAddress = if m == "veth" then c.localAddress else null;
          hostAddress6 = if m == "veth" then c.hostAddress6 else null;
          localAddress6 = if m == "veth" then c.localAddress6 else null;
          inherit (c.network) enableNat allowPeers;
          # Automatic IPv6 is nixcell's bridges' own; elsewhere the addresses are given.
          enableIPv6 = if m == "nixcell" then c.network.enableIPv6 else null;
          inherit (c) macvlans;
          forwardPorts = map (f: withoutNulls {
            inherit (f) protocol hostPort hostAddress;
            containerPort = if f.containerPort == null then f.hostPort else f.containerPort;
          }) c.forwardPorts;
        };
    in
    {
      # The unit's wantedBy starts the container at boot, not `nixcell autostart`.
      autostart = false;
      inherit network;
      bindMounts = listToAttrs (map (b: {
        name = b.mountPoint;
        value = { hostPath = if b.hostPath == null then b.mountPoint else b.hostPath; inherit (b) isReadOnly create writeAsHostRoot; };
      }) (lib.attrValues c.bindMounts));
      inherit (c) tmpfs ephemeral privileged store initArgs;
      consoleLogSize = c.consoleLogSize;
      limits = withoutNulls c.limits;
      allowedDevices = map (d: { inherit (d) node modifier; }) c.allowedDevices
        ++ lib.optional c.enableTun { node = "/dev/net/tun"; modifier = "rwm"; };
    };

  deviceOptions = {
    options = {
      node = mkOption { type = types.str; example = "/dev/net/tun"; description = "Path of the device node."; };
      modifier = mkOption { type = types.str; example = "rw"; description = "Access: r (read), w (write) and m (mknod), as systemd.resource-control(5)."; };
    };
  };
in
{
  # The options of nixcell.containers.<name>.
  module = { name, config, options, ... }: {
    options = {
      config = mkOption {
        description = ''
          The container's NixOS configuration, a NixOS module, evaluated with {option}`nixpkgs`
          (the host's by default) as nixos-container does; its system becomes a generation of the
          container's profile. Set this or {option}`path`.
        '';
        default = null;
        type = types.nullOr (lib.mkOptionType {
          name = "Toplevel NixOS config";
          merge = loc: defs: (import "${toString config.nixpkgs}/nixos/lib/eval-config.nix" {
            modules = [ (baseModule name config) ] ++ map (d: d.value) defs;
            prefix = [ "nixcell" "containers" name ];
            inherit (config) specialArgs;
            # The system is the host's (set by baseModule), as nixos-container does.
            system = null;
          }).config;
        });
      };
      path = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/nix/store/...-nixos-system-web";
        description = ''
          Instead of {option}`config`, a built NixOS system. A symbolic link (a profile) is resolved
          at every start and reload.
        '';
      };
      nixpkgs = mkOption {
        type = types.path;
        default = pkgs.path;
        defaultText = lib.literalExpression "pkgs.path";
        description = "The nixpkgs whose NixOS evaluates {option}`config`.";
      };
      specialArgs = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
        description = "Special arguments for the modules of {option}`config`.";
      };
      autoStart = mkOption { type = types.bool; default = false; description = "Whether the container starts when the host boots (its unit is wanted by machines.target)."; };
      ephemeral = mkOption { type = types.bool; default = false; description = "Whether the container's root starts empty at every start: what it writes there is gone when it stops (bind mounts keep theirs)."; };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether `nixos-rebuild switch` restarts the container when a change needs a restart
          (network, mounts, devices, privileges, store view). Other changes (its system, limits)
          are switched in place either way.
        '';
      };
      timeoutStartSec = mkOption { type = types.str; default = "1min"; description = "How long the unit may take to start (systemd.time(7)), preparing the generation included."; };
      bindMounts = mkOption {
        type = types.attrsOf (types.submodule bindMountOptions);
        default = { };
        example = lib.literalExpression ''{ "/home" = { hostPath = "/home/alice"; isReadOnly = false; }; }'';
        description = "Host directories mounted in the container.";
      };
      allowedDevices = mkOption {
        type = types.listOf (types.submodule deviceOptions);
        default = [ ];
        example = [ { node = "/dev/net/tun"; modifier = "rwm"; } ];
        description = "Device nodes the container may use beyond the standard ones.";
      };
      enableTun = mkOption { type = types.bool; default = false; description = "Whether the container may create tunnel interfaces (/dev/net/tun)."; };
      tmpfs = mkOption { type = types.listOf types.str; default = [ ]; example = [ "/var/cache" ]; description = "Paths in the container that get an empty tmpfs at every start (paths only, no mount options)."; };

      privateNetwork = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether the container has a network of its own. Unlike nixos-container, the default is
          true: the container is on nixcell's host-only bridge with addresses of its own. false
          shares the host's network (nixos-container's default).
        '';
      };
      hostBridge = nullOrStr "br0" "A bridge of the host's own to put the container's eth0 on (its address: localAddress, localAddress6), instead of nixcell's host-only bridge.";
      hostAddress = nullOrStr "10.231.136.1" "With localAddress: a private veth pair instead of a bridge; the host end's IPv4 address, the container's default gateway.";
      localAddress = nullOrStr "10.231.136.2" "The container's IPv4 address on the private veth pair (with hostAddress) or on hostBridge (with its prefix length).";
      hostAddress6 = nullOrStr "fc00::1" "The host end's IPv6 address of the private veth pair.";
      localAddress6 = nullOrStr "fc00::2" "The container's IPv6 address on the private veth pair or on hostBridge.";
      forwardPorts = mkOption {
        type = types.listOf (types.submodule forwardPortOptions);
        default = [ ];
        example = [ { protocol = "tcp"; hostPort = 8080; containerPort = 80; } ];
        description = "Host ports forwarded to the container (IPv4 and IPv6, from other hosts and from the host itself).";
      };
      macvlans = mkOption { type = types.listOf types.str; default = [ ]; example = [ "eth1" ]; description = "Host interfaces the container gets a macvlan of (mv-IFACE inside, left to its own configuration)."; };

      # nixcell's own.
      network = {
        enableNat = mkOption { type = types.bool; default = false; description = "nixcell: also an interface on the NAT bridge, with the default routes out through the host's uplink."; };
        allowPeers = mkOption { type = types.bool; default = false; description = "nixcell: the container may reach (and be reached by) other containers on its bridge that allow it too."; };
        ip = nullOrStr "10.101.0.5" "nixcell: the container's fixed IPv4 address on nixcell's host-only bridge; null: assigned automatically (and kept).";
        ip6 = nullOrStr "fd00::5" "nixcell: the container's fixed IPv6 address on the host-only bridge.";
        enableIPv6 = mkOption { type = types.bool; default = true; description = "nixcell: whether the container gets IPv6 addresses on nixcell's bridges."; };
      };
      limits = {
        memory = mkOption { type = types.nullOr (types.either types.str types.ints.positive); default = null; example = "512M"; description = "nixcell: memory limit (swap counts against it), bytes or a size such as \"512M\"; null: none."; };
        cpus = mkOption { type = types.nullOr types.number; default = null; example = 1.5; description = "nixcell: CPU time in CPUs (1.5 = 150 ms per 100 ms); null: none."; };
        pids = mkOption { type = types.nullOr types.ints.positive; default = null; example = 2000; description = "nixcell: processes and threads; null: none."; };
      };
      store = mkOption { type = types.enum [ "full" "closure" ]; default = "full"; description = "nixcell: what the container sees of /nix/store: all of it, or only its system's closure."; };
      privileged = mkOption { type = types.bool; default = false; description = "nixcell: no user namespace, the container's root is the host's root. Fixed when the container is first created."; };
      initArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "systemd.unit=rescue.target" "systemd.log_level=debug" ];
        description = "nixcell: arguments for the container's init, as systemd-nspawn passes what follows the init on its command line (systemd reads them as its kernel command line).";
      };
      consoleLogSize = mkOption {
        type = types.nullOr (types.either types.str types.ints.positive);
        default = null;
        example = "16M";
        description = "nixcell: what the container's console log keeps of its latest output, in console.log and console.log.1 together (at least 128K); null: 4M.";
      };

      # nixos-container's options that nixcell cannot honour: declared so that setting them is an
      # error with a reason (see `unsupported`), never silently ignored.
      additionalCapabilities = mkOption { type = types.listOf types.str; default = [ ]; visible = false; description = "Not supported by nixcell."; };
      extraFlags = mkOption { type = types.listOf types.str; default = [ ]; visible = false; description = "Not supported by nixcell."; };
      extraVeths = mkOption { type = types.attrsOf types.anything; default = { }; visible = false; description = "Not supported by nixcell."; };
      interfaces = mkOption { type = types.listOf types.str; default = [ ]; visible = false; description = "Not supported by nixcell."; };
      localMacAddress = mkOption { type = types.nullOr types.str; default = null; visible = false; description = "Not supported by nixcell."; };
      networkNamespace = mkOption { type = types.nullOr types.path; default = null; visible = false; description = "Not supported by nixcell."; };
      copyResolvConf = mkOption { type = types.bool; default = false; visible = false; description = "Not supported by nixcell (its name server is the container's resolver)."; };
      privateUsers = mkOption { type = types.either types.ints.u32 (types.enum [ "no" "identity" "pick" ]); default = "pick"; visible = false; description = "nixcell always picks an ID range of the container's own (or none: privileged)."; };
      flake = mkOption { type = types.nullOr types.str; default = null; visible = false; description = "Not supported by nixcell yet."; };
    };
    config.path = lib.mkIf (config.config != null) config.config.system.build.toplevel;
  };

  # The settings nixcell reads (internal/spec), as the attribute set form of a configuration.
  inherit settings;

  # What a running container can take in place (switch-to-configuration inside it, limits
  # through its cgroup); any other change restarts it. A container that sees only its closure
  # of the store cannot switch to a new system either.
  restartKey = c: system:
    builtins.hashString "sha256" (toJSON (removeAttrs (settings c) [ "limits" "autostart" ]
      // lib.optionalAttrs (c.store == "closure") { inherit system; }));

  # Messages for what is set and that nixcell cannot honour.
  unsupported = name: c:
    let
      at = o: "nixcell.containers.${name}.${o}";
      m = mode c;
      setAmong = os: filter (o: c.${o} != null) os;
      nixcellOnly = filter (o: c.network.${o} != null && c.network.${o} != false) [ "ip" "ip6" "enableNat" "allowPeers" ]
        ++ lib.optional (!c.network.enableIPv6) "enableIPv6";
    in
    lib.optional (c.config == null && c.path == null) "${at "config"}: set config (a NixOS module) or path (a built system)"
    ++ lib.optional (match "[a-z]([a-z0-9-]{0,61}[a-z0-9])?" name == null || name == "localhost") "nixcell.containers.${name}: \"${name}\" is not a container name: a DNS label of lower-case letters, digits and inner hyphens (at most 63), starting with a letter, other than localhost"
    ++ lib.optional (c.additionalCapabilities != [ ]) "${at "additionalCapabilities"}: nixcell gives every container systemd-nspawn's default capability set and cannot add to it (privileged = true is the only way to more)"
    ++ lib.optional (c.extraFlags != [ ]) "${at "extraFlags"}: nixcell does not run systemd-nspawn, so it takes no nspawn flags; use its options (bindMounts, tmpfs, allowedDevices, network, limits, ...)"
    ++ lib.optional (c.extraVeths != { }) "${at "extraVeths"}: nixcell gives a container one veth pair or bridge port (plus the NAT bridge's); extra veth pairs are not supported"
    ++ lib.optional (c.interfaces != [ ]) "${at "interfaces"}: nixcell cannot move host interfaces into a container; use macvlans or hostBridge"
    ++ lib.optional (c.localMacAddress != null) "${at "localMacAddress"}: nixcell does not set the MAC address of the container's interface"
    ++ lib.optional (c.networkNamespace != null) "${at "networkNamespace"}: nixcell cannot join an existing network namespace"
    ++ lib.optional c.copyResolvConf "${at "copyResolvConf"}: nixcell does not copy the host's resolv.conf; the container's resolver is nixcell's name server on its bridge (set networking.nameservers in config for another)"
    ++ lib.optional (c.privateUsers != "pick") "${at "privateUsers"}: nixcell always gives a container an ID range of its own (\"pick\"); for none, as \"no\" means, set privileged = true"
    ++ lib.optional (c.flake != null) "${at "flake"}: a declared container comes from config or path; build the flake's system into path (e.g. path = inputs.web.nixosConfigurations.web.config.system.build.toplevel)"
    ++ map (t: "${at "tmpfs"}: \"${t}\": nixcell takes mount points only, without mount options") (filter (t: match "[^:]*" t == null) c.tmpfs)
    ++ lib.optionals (m == "host") (map (o: "${at o}: needs privateNetwork = true (privateNetwork = false shares the host's network)")
      (setAmong [ "hostBridge" "hostAddress" "localAddress" "hostAddress6" "localAddress6" ]
        ++ lib.optional (c.forwardPorts != [ ]) "forwardPorts"
        ++ lib.optional (c.macvlans != [ ]) "macvlans"
        ++ map (o: "network.${o}") nixcellOnly))
    ++ lib.optionals (m == "hostBridge") (
      map (o: "${at o}: with hostBridge the container is on a bridge of the host's own with localAddress and localAddress6 as its addresses, and nixcell sets no gateway there (set networking.defaultGateway in config)") (setAmong [ "hostAddress" "hostAddress6" ])
      ++ map (o: "${at "network.${o}"}: only for nixcell's own bridges, not with hostBridge (the address there is localAddress)") nixcellOnly)
    ++ lib.optional (m == "nixcell" && !c.network.enableIPv6 && c.network.ip6 != null) "${at "network.ip6"}: is set but network.enableIPv6 is false"
    ++ lib.optionals (m == "veth") (
      lib.optional ((c.hostAddress != null) != (c.localAddress != null)) "${at "hostAddress"}: hostAddress and localAddress go together (a private veth pair)"
      ++ lib.optional ((c.hostAddress6 != null) != (c.localAddress6 != null)) "${at "hostAddress6"}: hostAddress6 and localAddress6 go together (a private veth pair)"
      ++ map (o: "${at "network.${o}"}: a container with a private veth pair (hostAddress, localAddress) is not on nixcell's bridges") nixcellOnly);

  inherit mode;
}
