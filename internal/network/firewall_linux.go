package network

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"

	"github.com/google/nftables"
)

// syncRules makes nixcell's tables (inet and bridge, named table) hold
// exactly script, and returns script's digest. last is the digest it
// returned the previous time: when script is unchanged and the tables are
// still in the kernel, nft is not run, so an unchanged ruleset is never
// reloaded (its counters and the connections it tracks stay as they are).
func syncRules(table, script, last string) (digest string, err error) {
	sum := sha256.Sum256([]byte(script))
	digest = hex.EncodeToString(sum[:])
	if digest == last && (script == "" || tablesExist(table)) {
		return digest, nil
	}
	if err := applyRules(table, script); err != nil {
		return last, err
	}
	return digest, nil
}

// applyRules replaces nixcell's tables with script in one transaction, or
// deletes them when script is empty.
func applyRules(table, script string) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("nft is not installed (install nftables): %w", err)
	}
	var full strings.Builder
	for _, fam := range []string{"inet", "bridge"} {
		// "add" makes the delete valid whether or not the table exists.
		fmt.Fprintf(&full, "add table %s %s\ndelete table %s %s\n", fam, table, fam, table)
	}
	full.WriteString(script)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(full.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// tablesExist tells whether nixcell's inet table is in the kernel, asked
// over netlink (no nft process).
func tablesExist(table string) bool {
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false
	}
	for _, t := range tables {
		if t.Name == table {
			return true
		}
	}
	return false
}
