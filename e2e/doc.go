// Package e2e owns nixcell's end-to-end tests: they build the nixcell binary
// and drive it as a user would, as root, with real namespaces, real cgroups
// and real nix-build against the stand-in nixpkgs in fixtures/. Each test
// uses its own state directory and container names and checks that nothing
// of its containers is left on the host.
package e2e
