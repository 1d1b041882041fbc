// Package ctl is shadowctl: the command line for field technicians (the
// local API over a unix socket, config checks) and cloud operators (shadows
// and commands over MQTT). cmd/shadowctl only calls Main.
//
// A command is one cliCommand in the table that commands() returns: its
// words, a one-line summary, its usage text (arguments and examples) and a
// run function. run parses its flags with parseArgs or parseFlags; that
// FlagSet is also what help, the global flags and shell completion read
// (see describe), so a flag exists in one place only.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Exit codes, stable for scripts.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the operation ran and failed (invalid config, FAILURE ack)
	ExitUsage    = 2 // bad arguments
	ExitNoDaemon = 3 // the daemon or broker could not be reached
)

// usageError marks an error that is the caller's arguments.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// env is what a command runs with.
type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
}

// cliCommand is one subcommand. To add one, append it to the list of its
// family (localCommands, operatorCommands, or commands below); its flags,
// help and completion follow from the FlagSet its run function parses.
type cliCommand struct {
	name    string // its words, e.g. "command send"
	summary string // one line for the command list
	usage   string // the usage line(s), then a blank line and examples
	run     func(e *env, args []string) error
}

func commands() []cliCommand {
	cmds := append(append(localCommands(), operatorCommands()...), jobCommands()...)
	return append(cmds, []cliCommand{
		{"config check", "validate a configuration file (no daemon needed)",
			"shadowctl config check [FILE]\n\nFILE defaults to /etc/shadowgate/shadowgate.yaml. Every problem is printed\nas FILE:LINE: key.path: message. Exit 1 when the file is invalid.\n\nExample:\n  shadowctl config check /etc/shadowgate/shadowgate.yaml",
			runConfigCheck},
		{"help", "the list of commands, or one command's arguments, flags and examples",
			"shadowctl help [COMMAND]\n\nExamples:\n  shadowctl help\n  shadowctl help command send",
			runHelp},
		{"completion", "print the shell completion script (bash or zsh)",
			"shadowctl completion bash|zsh\n\nThe .deb installs both. By hand:\n  bash: source <(shadowctl completion bash)            # e.g. in ~/.bashrc\n  zsh:  shadowctl completion zsh > \"${fpath[1]}/_shadowctl\"  # or: source <(shadowctl completion zsh)",
			runCompletion},
		{"version", "print shadowctl's version", "shadowctl version", runVersion},
	}...)
}

// Main runs shadowctl with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) > 0 && args[0] == completeCommand {
		return runComplete(e, cmds, args[1:])
	}
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return runMain(e, cmds, append([]string{"version"}, args[1:]...))
	}
	// Global flags may come before the command (shadowctl --socket X
	// history); they are handed to the command with its own arguments.
	lead, rest, help, err := leadingFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "shadowctl: %v\n\nRun 'shadowctl help' for the commands and global flags.\n", err)
		return ExitUsage
	}
	if len(rest) == 0 {
		switch {
		case help:
			printHelp(stdout, cmds)
			return ExitOK
		case len(lead) > 0:
			fmt.Fprintf(stderr, "shadowctl: %s: give a command\n\n", strings.Join(lead, " "))
			printHelp(stderr, cmds)
			return ExitUsage
		}
		printHelp(stdout, cmds)
		return ExitOK
	}
	best, n := match(cmds, rest)
	if best == nil {
		if group := subcommands(cmds, rest[0]); len(group) > 0 {
			if help || (len(rest) > 1 && isHelp(rest[1])) {
				printGroupHelp(stdout, rest[0], group)
				return ExitOK
			}
			what := fmt.Sprintf("%q needs a subcommand", rest[0])
			if len(rest) > 1 {
				what = fmt.Sprintf("unknown command %q", rest[0]+" "+rest[1])
			}
			fmt.Fprintf(stderr, "shadowctl: %s\n\n", what)
			printGroupHelp(stderr, rest[0], group)
			return ExitUsage
		}
		fmt.Fprintf(stderr, "shadowctl: unknown command %q\n\n", strings.Join(rest, " "))
		printHelp(stderr, cmds)
		return ExitUsage
	}
	cmdArgs := append(append([]string{}, lead...), rest[n:]...)
	if help || wantsHelp(rest[n:]) {
		printCommandHelp(stdout, best)
		return ExitOK
	}
	if err := leadApplies(best, lead); err != nil {
		return usageExit(e, best, err)
	}
	return finish(e, best, best.run(e, cmdArgs))
}

// runMain runs one command by name (for aliases such as --version).
func runMain(e *env, cmds []cliCommand, args []string) int {
	best, n := match(cmds, args)
	return finish(e, best, best.run(e, args[n:]))
}

// match finds the command whose words begin args, the longest one.
func match(cmds []cliCommand, args []string) (*cliCommand, int) {
	var best *cliCommand
	bestWords := 0
	for i := range cmds {
		words := strings.Fields(cmds[i].name)
		if len(words) <= len(args) && strings.Join(args[:len(words)], " ") == cmds[i].name && len(words) > bestWords {
			best, bestWords = &cmds[i], len(words)
		}
	}
	return best, bestWords
}

// subcommands are the commands whose first word is word, when there are
// several words (shadow → shadow get, shadow update, …).
func subcommands(cmds []cliCommand, word string) []cliCommand {
	var out []cliCommand
	for _, c := range cmds {
		if strings.HasPrefix(c.name, word+" ") {
			out = append(out, c)
		}
	}
	return out
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// wantsHelp is whether a command's arguments ask for its help (before any
// "--", which ends the flags).
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelp(a) {
			return true
		}
	}
	return false
}

// finish turns a command's error into its message and exit code.
func finish(e *env, c *cliCommand, err error) int {
	var ue *usageError
	var ce *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return usageExit(e, c, err)
	case errors.As(err, &ce):
		if ce.msg != "" {
			fmt.Fprintln(e.stderr, ce.msg)
		}
		return ce.code
	default:
		fmt.Fprintf(e.stderr, "shadowctl %s: %v\n", c.name, err)
		return ExitFailure
	}
}

func usageExit(e *env, c *cliCommand, err error) int {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		msg += flagHint(c, strings.TrimLeft(name, "-"))
	}
	fmt.Fprintf(e.stderr, "shadowctl %s: %s\n\nUsage: %s\n\nRun 'shadowctl help %s' for its flags.\n", c.name, msg, usageLine(c), c.name)
	return ExitUsage
}

// exitError ends a command with a given code and message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// parseFlags parses a command's flags, turning flag errors into usage
// errors; positional arguments stay in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	if described(fs, args) {
		return errDescribed
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func runHelp(e *env, args []string) error {
	fs := flag.NewFlagSet("help", flag.ContinueOnError)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	cmds := commands()
	if len(pos) == 0 {
		printHelp(e.stdout, cmds)
		return nil
	}
	if c, n := match(cmds, pos); c != nil && n == len(pos) {
		printCommandHelp(e.stdout, c)
		return nil
	}
	if group := subcommands(cmds, pos[0]); len(group) > 0 && len(pos) == 1 {
		printGroupHelp(e.stdout, pos[0], group)
		return nil
	}
	return usagef("no command %q (shadowctl help lists them)", strings.Join(pos, " "))
}

func runVersion(e *env, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("takes no arguments")
	}
	fmt.Fprintln(e.stdout, "shadowctl", versionString())
	return nil
}

// jobsFamily is the heading of the job commands in the command list.
const jobsFamily = "Cloud jobs (AWS IoT Jobs over HTTPS; --endpoint-url, --region, --profile, AWS credentials):"

// family sorts commands for the command list by the flags they take.
func family(c *cliCommand) string {
	fs := describe(c)
	switch {
	case fs != nil && fs.Lookup("socket") != nil:
		return "On the gateway (the daemon's local API; --socket):"
	case fs != nil && fs.Lookup("broker") != nil:
		return "Cloud shadows and commands (over MQTT; --broker, --topic-root, TLS flags):"
	case fs != nil && fs.Lookup("endpoint-url") != nil:
		return jobsFamily
	}
	return "Other:"
}

func printHelp(w io.Writer, cmds []cliCommand) {
	fmt.Fprintln(w, "shadowctl: control a shadowgate gateway and its cloud shadows and commands")
	fmt.Fprintln(w, "\nUsage: shadowctl [GLOBAL FLAGS] COMMAND [ARGUMENTS] [FLAGS]")
	cmds = append([]cliCommand{}, cmds...)
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	groups := map[string][]cliCommand{}
	for _, c := range cmds {
		f := family(&c)
		groups[f] = append(groups[f], c)
	}
	for _, f := range []string{"On the gateway (the daemon's local API; --socket):", "Cloud shadows and commands (over MQTT; --broker, --topic-root, TLS flags):", jobsFamily, "Other:"} {
		if len(groups[f]) == 0 {
			continue
		}
		fmt.Fprintln(w, "\n"+f)
		for _, c := range groups[f] {
			fmt.Fprintf(w, "  %-24s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nGlobal flags (before or after the command; each applies to the commands that use it):")
	printFlags(w, globalFlagSet(), nil)
	fmt.Fprintln(w, "\nRun 'shadowctl help COMMAND' or 'shadowctl COMMAND --help' for its arguments, flags and examples.")
}

func printGroupHelp(w io.Writer, word string, group []cliCommand) {
	fmt.Fprintf(w, "shadowctl %s: one of\n", word)
	for _, c := range group {
		fmt.Fprintf(w, "  %-24s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'shadowctl help %s' for one's arguments, flags and examples.\n", group[0].name)
}

// usageLine is the first paragraph of a command's usage.
func usageLine(c *cliCommand) string {
	line, _, _ := strings.Cut(c.usage, "\n\n")
	return line
}

func printCommandHelp(w io.Writer, c *cliCommand) {
	fmt.Fprintf(w, "shadowctl %s: %s\n\nUsage: %s\n", c.name, c.summary, c.usage)
	fs := describe(c)
	if fs == nil {
		return
	}
	globals := globalFlagSet()
	own := func(f *flag.Flag) bool { return globals.Lookup(f.Name) == nil }
	global := func(f *flag.Flag) bool { return !own(f) }
	if countFlags(fs, own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs, own)
	}
	if countFlags(fs, global) > 0 {
		fmt.Fprintln(w, "\nGlobal flags (also before the command):")
		printFlags(w, fs, global)
	}
}

func countFlags(fs *flag.FlagSet, keep func(*flag.Flag) bool) int {
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if keep == nil || keep(f) {
			n++
		}
	})
	return n
}

// flagName is how a flag is written: -n, --socket.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func printFlags(w io.Writer, fs *flag.FlagSet, keep func(*flag.Flag) bool) {
	type row struct{ left, usage string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		if keep != nil && !keep(f) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		left := flagName(f.Name)
		if name != "" {
			left += " " + strings.ToUpper(name)
		}
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			usage += " (default " + f.DefValue + ")"
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, r.left, r.usage)
	}
}
