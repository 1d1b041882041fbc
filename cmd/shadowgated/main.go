// Command shadowgated is the shadowgate daemon: it syncs the gateway's
// actuators with their cloud shadows, runs commands and keeps history.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/shadowgate/shadowgate/agent/clock/clocktest"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/resident"
	"github.com/shadowgate/shadowgate/agent/version"
)

// exitConfig (EX_CONFIG) tells systemd that restarting will not help
// (RestartPreventExitStatus=78 in the unit).
const exitConfig = 78

func main() {
	// A gateway has 512 MB for everything: trade a little CPU for a heap
	// that grows half as far past the live data (GOGC=50). An explicit
	// GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	path := flag.String("config", "/etc/shadowgate/shadowgate.yaml", "configuration file")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("shadowgated", version.Version)
		return
	}
	// A CONFIG_UPDATE job that was on trial when the gateway stopped: its
	// previous file is put back before anything reads the file.
	if msg, err := daemon.RecoverConfigUpdate(*path); err != nil {
		fmt.Fprintln(os.Stderr, "shadowgated:", err)
	} else if msg != "" {
		fmt.Fprintln(os.Stderr, "shadowgated:", msg)
	}
	cfg, err := daemon.LoadConfig(*path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(os.Stderr, p)
			}
			fmt.Fprintf(os.Stderr, "shadowgated: %s has %d problem(s); not starting\n", *path, len(ps))
			os.Exit(exitConfig)
		}
		fmt.Fprintln(os.Stderr, "shadowgated:", err)
		os.Exit(exitConfig)
	}
	log := daemon.NewLogger(cfg.Log, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	// Once start-up is over, the memory only it needed goes back to the
	// kernel: most of the binary's pages, the heap's garbage.
	hooks := daemon.Hooks{Memory: new(resident.Releaser)}
	if p := os.Getenv(clocktest.Env); p != "" {
		// Tests only: a wrong system clock, as a Pi without an RTC has.
		o := clocktest.Options(p)
		hooks.Clock = &o
		log.Warn("test clock in use", "file", p)
	}
	if err := daemon.Serve(ctx, cfg, log, hooks, hup); err != nil {
		log.Error("shadowgated stopped", "err", err)
		os.Exit(1)
	}
}
