// Package network owns the host side of container networking for one
// nixcell instance: its settings, the addresses and host ports containers
// hold, the plan of each container's interfaces, and convergence of the
// host to what the running containers need — the managed bridges and the
// containers' veth and macvlan interfaces, the forwarding sysctls,
// nixcell's own nftables tables (NAT, port forwards, isolation), and the
// containers' names (a block in the hosts file and a name server on the
// bridges). It reads no environment: its settings come in as a Config,
// the host's particulars as a Host, and which containers run as Members
// (the run table's, package state).
//
// It converges: State.Apply computes the Desired state and brings the host
// to it idempotently, rewriting nixcell's tables as a whole in one nft
// transaction, so every add has its delete and nothing outside what
// nixcell owns is touched.
//
// Files, by what they own. Netlink, nft and sysctl calls are in
// *_linux.go; settings, addressing, plans, the desired state, the ruleset
// and the name table are pure, tested without root; everything is also
// tested as root, each test in fresh network namespaces of its own
// (netns_linux_test.go).
//
//   - config.go: Config and the Settings fixed from it (subnets, ULA,
//     bridge and table names).
//   - addressing.go: address allocation and host port claims.
//   - interfaces.go: the plan of a container's interfaces (Plan).
//   - state.go: the State an instance stores, and its Store.
//   - desired.go: the Desired state, computed from the State and the
//     members.
//   - firewall.go: the ruleset rendered from Desired (pure);
//     firewall_linux.go: applying it with nft, only when it changed.
//   - links_linux.go: bridges, veth pairs, macvlans, addresses, routes and
//     sysctls.
//   - hostsfile.go: the block of names in the hosts file.
//   - nametable.go: the table of names the name server serves, with who
//     may resolve whom decided here; nametable.c (nametable.h): its
//     parser and the DNS answers, plain C without I/O (nametable_cgo.go
//     lets the tests compare them with a Go resolver's and fuzz them);
//     nameserver.c (nameserver.go): the name server, a C event loop run
//     before the Go runtime starts.
//   - apply_linux.go: Apply, the orchestration of all of the above.
//   - status_linux.go: the network as the kernel has it.
package network
