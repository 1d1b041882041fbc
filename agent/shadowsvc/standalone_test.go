package shadowsvc_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"

	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestStandaloneServesHTTP(t *testing.T) {
	b := brokertest.Start(t)
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	os.WriteFile(credFile, []byte(testCredentials), 0o600)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- shadowsvc.RunStandalone(ctx, shadowsvc.StandaloneOptions{Broker: b.URL(), ClientID: "svc-http", Root: "$aws/things/",
			StorePath: filepath.Join(dir, "svc.db"), LogLevel: "info", HTTP: shadowsvc.HTTPOptions{Addr: addr, Credentials: credFile}}, io.Discard)
	}()
	api := staticClient("http://"+addr, "AKIDADMIN0000000001", "admin-secret-0000000000000000000000000")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := api.UpdateThingShadow(context.Background(), &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-standalone"), Payload: []byte(`{"state":{"reported":{"up":true}}}`)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadowsvc --http did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunStandalone: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("RunStandalone did not stop")
	}
}

func TestStandaloneRefusesUnsafeHTTP(t *testing.T) {
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	os.WriteFile(credFile, []byte(testCredentials), 0o600)
	for _, tc := range []struct {
		http shadowsvc.HTTPOptions
		want string
	}{
		{shadowsvc.HTTPOptions{Addr: "0.0.0.0:8443", Credentials: credFile}, "--http 0.0.0.0:8443: plain HTTP is allowed only on a loopback address; give --http-cert and --http-key"},
		{shadowsvc.HTTPOptions{Addr: "0.0.0.0:8443", CertFile: "c.pem", KeyFile: "k.pem"}, "a non-loopback address needs --credentials"},
		{shadowsvc.HTTPOptions{Addr: "127.0.0.1:0", Credentials: filepath.Join(dir, "missing")}, "--credentials: read credentials"},
		{shadowsvc.HTTPOptions{Credentials: credFile}, "need --http ADDR"},
	} {
		err := shadowsvc.RunStandalone(context.Background(), shadowsvc.StandaloneOptions{Broker: "tcp://127.0.0.1:1", ClientID: "x", Root: "$aws/things/",
			StorePath: filepath.Join(dir, "svc.db"), LogLevel: "info", HTTP: tc.http}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want %q, got %v", tc.http, tc.want, err)
		}
	}
}
