// Package ctl is shadowctl: the command line for field technicians (the
// local API over a unix socket, config checks) and cloud operators (shadows
// and commands over MQTT). cmd/shadowctl only calls Main.
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

type cliCommand struct {
	name    string
	summary string
	usage   string // arguments and examples
	run     func(e *env, args []string) error
}

func commands() []cliCommand {
	cmds := append(localCommands(), operatorCommands()...)
	return append(cmds, []cliCommand{
		{"config check", "validate a configuration file (no daemon needed)",
			"shadowctl config check [FILE]\n\nFILE defaults to /etc/shadowgate/shadowgate.yaml. Every problem is printed\nas FILE:LINE: key.path: message. Exit 1 when the file is invalid.\n\nExample:\n  shadowctl config check /etc/shadowgate/shadowgate.yaml",
			runConfigCheck},
	}...)
}

// Main runs shadowctl with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printHelp(stdout, cmds)
		return ExitOK
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, "shadowctl", versionString())
		return ExitOK
	}
	// Longest match of the command words.
	var best *cliCommand
	bestWords := 0
	for i := range cmds {
		words := strings.Fields(cmds[i].name)
		if len(words) <= len(args) && strings.Join(args[:len(words)], " ") == cmds[i].name && len(words) > bestWords {
			best, bestWords = &cmds[i], len(words)
		}
	}
	if best == nil {
		fmt.Fprintf(stderr, "shadowctl: unknown command %q\n\n", strings.Join(args, " "))
		printHelp(stderr, cmds)
		return ExitUsage
	}
	rest := args[bestWords:]
	for _, a := range rest {
		if a == "-h" || a == "--help" {
			fmt.Fprintf(stdout, "%s: %s\n\nUsage: %s\n", best.name, best.summary, best.usage)
			return ExitOK
		}
	}
	err := best.run(e, rest)
	var ue *usageError
	var ce *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "shadowctl %s: %v\n\nUsage: %s\n", best.name, err, best.usage)
		return ExitUsage
	case errors.As(err, &ce):
		if ce.msg != "" {
			fmt.Fprintln(stderr, ce.msg)
		}
		return ce.code
	default:
		fmt.Fprintf(stderr, "shadowctl %s: %v\n", best.name, err)
		return ExitFailure
	}
}

// exitError ends a command with a given code and message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func printHelp(w io.Writer, cmds []cliCommand) {
	fmt.Fprintln(w, "shadowctl: control a shadowgate gateway and its cloud shadows and commands")
	fmt.Fprintln(w, "\nCommands:")
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-24s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'shadowctl COMMAND --help' for a command's arguments and examples.")
}

// parseFlags parses a command's flags, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	return nil
}
