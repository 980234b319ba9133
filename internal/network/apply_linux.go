package network

import "fmt"

// Apply converges the host to d: the managed bridges that running
// containers use exist with their addresses (created, or repaired if
// something deleted them), those no container uses are gone, nixcell's
// nftables tables hold exactly the rules d renders, and the hosts file
// names the running containers. It is idempotent. last is the digest Apply
// returned the previous time: when the rules are unchanged and nixcell's
// tables are still there, nft is not run (see syncRules). The caller holds
// the global lock.
func Apply(d Desired, last string) (applied string, err error) {
	if d.Uplink == "" {
		d.Uplink = DefaultUplink()
	}
	hostOnly, nat := d.Settings.Bridges()
	useHostOnly, useNAT := d.bridgesInUse()
	for _, b := range []struct {
		Bridge
		use bool
	}{{hostOnly, useHostOnly}, {nat, useNAT}} {
		if b.use {
			created, err := ensureBridge(b.Bridge)
			if err != nil {
				return last, fmt.Errorf("bridge %s: %w", b.Name, err)
			}
			if created {
				last = "" // a new bridge means a host that lost its state
			}
		} else if err := deleteLink(b.Name); err != nil {
			return last, fmt.Errorf("removing unused bridge %s: %w", b.Name, err)
		}
	}
	if d.needsForwarding() {
		if err := enableForwarding(); err != nil {
			return last, err
		}
	}
	applied, err = syncRules(d.Settings.Table, d.Render(), last)
	if err != nil {
		return last, err
	}
	return applied, syncHosts(d)
}

// Apply converges the host to the state with members running, and
// remembers what it applied. The caller holds the global lock.
func (st *State) Apply(members []Member, host Host) error {
	return st.ApplyDesired(st.Desired(members, host))
}

// ApplyDesired is Apply of what st.Desired returned.
func (st *State) ApplyDesired(d Desired) error {
	var err error
	st.Applied, err = Apply(d, st.Applied)
	return err
}
