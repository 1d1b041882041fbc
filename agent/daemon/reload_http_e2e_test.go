package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"
	"github.com/aws/smithy-go"

	"github.com/shadowgate/shadowgate/agent/daemon"
)

const reloadHTTPYAML = `
gateway: {thing: gw-rlhttp}
broker:
  embedded: true
  listen: %s
  http: {listen: %s, credentials: %s}
store: {path: %s}
actuators:
  porch_light: {driver: sim, state: {on: false}}
`

// A reload that changes the embedded HTTP API's keys, or moves the broker,
// while the HTTP API stays on its port, takes effect: the new server
// takes over the listening socket from the old one (it used to fail
// "address already in use", keeping the old keys).
func TestReloadKeepsTheHTTPPort(t *testing.T) {
	dir := t.TempDir()
	keys := func(name, id, secret string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id, secret)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldKeys := keys("old-credentials", "AKIARELOADOLD0000001", "old-secret-0000000000000000000000000000")
	newKeys := keys("new-credentials", "AKIARELOADNEW0000001", "new-secret-0000000000000000000000000000")
	cfgPath, httpAddr := filepath.Join(dir, "shadowgate.yaml"), freeAddr(t)
	write := func(mqtt, creds string) {
		y := fmt.Sprintf(reloadHTTPYAML, mqtt, httpAddr, creds, filepath.Join(dir, "state.db"))
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(freeAddr(t), oldKeys)
	cfg, err := daemon.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d := gateway(t, cfg)
	client := func(id, secret string) *iotdataplane.Client {
		return iotdataplane.New(iotdataplane.Options{Region: "eu-west-1", BaseEndpoint: aws.String("http://" + httpAddr),
			Credentials: credentials.NewStaticCredentialsProvider(id, secret, "")})
	}
	oldAPI := client("AKIARELOADOLD0000001", "old-secret-0000000000000000000000000000")
	newAPI := client("AKIARELOADNEW0000001", "new-secret-0000000000000000000000000000")
	get := func(api *iotdataplane.Client) error {
		_, err := api.GetThingShadow(context.Background(), &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-rlhttp")})
		return err
	}
	forbidden := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && ae.ErrorCode() == "ForbiddenException"
	}
	waitFor(t, "the gateway's shadow over HTTP with the old keys", func() bool { return get(oldAPI) == nil })

	// New keys, same port.
	write(cfg.Broker.Listen, newKeys)
	changes, err := d.Reload(context.Background())
	if err != nil {
		t.Fatalf("reload with new HTTP keys on the same port: %v", err)
	}
	if !strings.Contains(strings.Join(changes, "; "), "embedded shadow service") {
		t.Fatalf("changes: %q", changes)
	}
	if err := get(newAPI); err != nil {
		t.Fatalf("new keys after the reload: %v", err)
	}
	if err := get(oldAPI); !forbidden(err) {
		t.Fatalf("old keys after the reload: %v, want ForbiddenException", err)
	}

	// The broker moves; the HTTP API stays where it is.
	moved := freeAddr(t)
	write(moved, newKeys)
	if _, err := d.Reload(context.Background()); err != nil {
		t.Fatalf("reload moving the broker, HTTP on the same port: %v", err)
	}
	waitFor(t, "connected to the moved broker", func() bool { return d.Link.Stats().Connected && d.Link.Stats().Broker == "tcp://"+moved })
	if err := get(newAPI); err != nil {
		t.Fatalf("HTTP after the broker moved: %v", err)
	}
}
