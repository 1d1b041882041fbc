// Command shadowctl controls a shadowgate gateway (over its local API) and
// the fleet's shadows and commands (over MQTT). See `shadowctl --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/shadowgate/shadowgate/agent/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
