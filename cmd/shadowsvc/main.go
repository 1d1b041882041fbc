// Command shadowsvc is the self-hosted AWS IoT Device Shadow service for
// fleets on a plain MQTT broker (mosquitto, EMQX, HiveMQ): it answers the
// shadow topics of every thing exactly as AWS does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/agent/version"
)

func main() {
	var o shadowsvc.StandaloneOptions
	flag.StringVar(&o.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	flag.StringVar(&o.ClientID, "client-id", "shadowsvc", "MQTT client id")
	flag.StringVar(&o.Root, "topic-root", "$aws/things/", "shadow topic root")
	flag.StringVar(&o.StorePath, "store", "/var/lib/shadowsvc/shadows.db", "bbolt file holding the shadows")
	flag.StringVar(&o.TLS.CA, "ca", "", "CA bundle (PEM) for a TLS broker")
	flag.StringVar(&o.TLS.Cert, "cert", "", "client certificate (PEM)")
	flag.StringVar(&o.TLS.Key, "key", "", "client key (PEM)")
	flag.StringVar(&o.Username, "username", "", "MQTT username")
	flag.StringVar(&o.PasswordFile, "password-file", "", "file holding the MQTT password")
	flag.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	flag.IntVar(&o.MaxInFlightPerThing, "max-inflight-per-thing", shadowsvc.DefaultMaxInFlightPerThing, "requests of one thing waiting before more are answered 429 (AWS: 10 per connection)")
	flag.IntVar(&o.MaxQueued, "max-queued", shadowsvc.DefaultMaxQueued, "requests waiting in all before more are answered 429")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("shadowsvc", version.Version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := shadowsvc.RunStandalone(ctx, o, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "shadowsvc:", err)
		os.Exit(1)
	}
}
