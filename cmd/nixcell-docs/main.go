// Command nixcell-docs writes nixcell's shell completions (bash, zsh, fish)
// and man pages, generated from its command line, below a prefix:
//
//	nixcell-docs PREFIX
//
// makes PREFIX/share/bash-completion/completions/nixcell,
// PREFIX/share/zsh/site-functions/_nixcell,
// PREFIX/share/fish/vendor_completions.d/nixcell.fish and
// PREFIX/share/man/man1/nixcell*.1. The package build runs it; it is a
// program of its own so that the nixcell binary, which libcontainer
// re-executes as every container's init, links nothing of it.
//
// The pages are written as roff directly: the help texts are laid out by
// hand for an 80-column terminal, so they are kept as they are (no-fill),
// not read as Markdown.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixcell/nixcell/internal/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nixcell-docs PREFIX")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "nixcell-docs:", err)
		os.Exit(1)
	}
}

func write(prefix string) error {
	root := cli.Command()
	files := map[string]func() (string, error){
		"share/bash-completion/completions/nixcell": func() (string, error) {
			var b strings.Builder
			err := root.GenBashCompletionV2(&b, true)
			return b.String(), err
		},
		"share/zsh/site-functions/_nixcell": func() (string, error) {
			var b strings.Builder
			err := root.GenZshCompletion(&b)
			return b.String(), err
		},
		"share/fish/vendor_completions.d/nixcell.fish": func() (string, error) {
			var b strings.Builder
			err := root.GenFishCompletion(&b, true)
			return b.String(), err
		},
	}
	for _, c := range commands(root) {
		files["share/man/man1/"+pageName(c)+".1"] = func() (string, error) { return manPage(c), nil }
	}
	for name, gen := range files {
		text, err := gen()
		if err != nil {
			return fmt.Errorf("generating %s: %w", name, err)
		}
		p := filepath.Join(prefix, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// commands are c and every command below it that a user can run.
func commands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			out = append(out, commands(sub)...)
		}
	}
	return out
}

// pageName is "nixcell-network-status" for "nixcell network status".
func pageName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

// manPage renders one command's page.
func manPage(c *cobra.Command) string {
	var b strings.Builder
	section := func(title string) { fmt.Fprintf(&b, ".SH %s\n", title) }
	block := func(text string) {
		b.WriteString(".nf\n")
		for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
			b.WriteString(roffLine(line) + "\n")
		}
		b.WriteString(".fi\n")
	}
	fmt.Fprintf(&b, ".TH %s 1 \"\" \"nixcell\" \"nixcell manual\"\n", strings.ToUpper(pageName(c)))
	b.WriteString(".ad l\n.nh\n") // ragged right, no hyphenation: words stay whole for copying
	section("NAME")
	b.WriteString(roffLine(pageName(c)+" - "+c.Short) + "\n")
	section("SYNOPSIS")
	block(c.UseLine())
	section("DESCRIPTION")
	if c.Long != "" {
		block(c.Long)
	} else {
		block(c.Short)
	}
	if flags := c.NonInheritedFlags(); flags.HasAvailableFlags() {
		section("OPTIONS")
		block(flags.FlagUsagesWrapped(80))
	}
	if flags := c.InheritedFlags(); flags.HasAvailableFlags() {
		section("GLOBAL OPTIONS")
		block(flags.FlagUsagesWrapped(80))
	}
	if c.Example != "" {
		section("EXAMPLES")
		block(c.Example)
	}
	var also []string
	if c.HasParent() {
		also = append(also, `\fB`+pageName(c.Parent())+`\fR(1)`)
	}
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			also = append(also, `\fB`+pageName(sub)+`\fR(1)`)
		}
	}
	if len(also) > 0 {
		section("SEE ALSO")
		b.WriteString(strings.Join(also, ", ") + "\n")
	}
	return b.String()
}

// roffLine escapes a line of text for roff: backslashes, minus signs
// (which would otherwise print as hyphens, breaking copied options) and a
// leading dot or quote, which roff would take for a request.
func roffLine(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
