// Command shadowsvc is the self-hosted AWS IoT Device Shadow service for
// fleets on a plain MQTT broker (mosquitto, EMQX, HiveMQ): it answers the
// shadow topics of every thing exactly as AWS does, the AWS IoT Jobs device
// API (-no-jobs turns that off), and with --http the AWS IoT data-plane HTTP
// API (iot-data, SigV4) for apps, the AWS CLI and SDKs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shadowgate/shadowgate/agent/awsapi"
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
	flag.StringVar(&o.PresenceTopic, "presence-topic", shadowsvc.DefaultPresenceTopic, `the gateways' presence topic, {thing} for the thing, applied to their shadows ("" to ignore presence)`)
	flag.IntVar(&o.MaxQueued, "max-queued", shadowsvc.DefaultMaxQueued, "requests waiting in all before more are answered 429")
	flag.StringVar(&o.HTTP.Addr, "http", "", "serve the AWS IoT data-plane HTTP API (iot-data) on ADDR, e.g. 127.0.0.1:8080 or :8443 (off when empty)")
	flag.StringVar(&o.HTTP.CertFile, "http-cert", "", "TLS certificate (PEM) of the HTTP API; required off loopback")
	flag.StringVar(&o.HTTP.KeyFile, "http-key", "", "TLS key (PEM) of the HTTP API")
	flag.StringVar(&o.HTTP.Credentials, "credentials", "", "access keys of the HTTP API, in the AWS shared-credentials format; required off loopback")
	flag.StringVar(&o.HTTP.Region, "http-region", "", "the only region a request may be signed for (default: any)")
	flag.Float64Var(&o.HTTP.Rate, "http-rate", awsapi.DefaultRate, "HTTP requests a second per access key (token bucket; -1: no limit)")
	flag.IntVar(&o.HTTP.Burst, "http-burst", awsapi.DefaultBurst, "HTTP requests per access key at once (token bucket size)")
	flag.BoolVar(&o.NoJobs, "no-jobs", false, "do not serve the AWS IoT Jobs topics ($aws/things/+/jobs/…)")
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
