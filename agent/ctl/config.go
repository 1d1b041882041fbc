package ctl

import (
	"errors"
	"flag"
	"fmt"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/version"
	"github.com/shadowgate/shadowgate/drivers"
	_ "github.com/shadowgate/shadowgate/drivers/all" // every driver checks its options
)

// DefaultConfigPath is where the .deb installs the configuration.
const DefaultConfigPath = "/etc/shadowgate/shadowgate.yaml"

func versionString() string { return version.Version }

func runConfigCheck(e *env, args []string) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := DefaultConfigPath
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		return usagef("takes at most one FILE, got %d", fs.NArg())
	}
	c, err := config.Load(path, drivers.Check)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(e.stderr, p)
			}
			return &exitError{code: ExitFailure, msg: fmt.Sprintf("%s: %d problem(s); nothing was changed", path, len(ps))}
		}
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("shadowctl config check: %v", err)}
	}
	fmt.Fprintf(e.stdout, "%s: OK (thing %s, %d actuators, %d command types)\n",
		path, c.Gateway.Thing, len(c.Actuators), len(c.Commands.Types))
	return nil
}
