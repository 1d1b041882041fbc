package localapi_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/localapi"
)

func client(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
}

func serve(t *testing.T, sock string) {
	t.Helper()
	s, err := localapi.Listen(sock, "", &localapi.Backend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestGuardAndErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	serve(t, sock)
	c := client(sock)
	for _, h := range []string{"Origin", "Referer"} {
		req, _ := http.NewRequest("GET", "http://x/v1/status", nil)
		req.Header.Set(h, "http://evil.example")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body localapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || body.Error.Code != localapi.CodeForbidden {
			t.Fatalf("%s: %d %+v", h, resp.StatusCode, body)
		}
	}
	resp, err := c.Get("http://x/v1/nothing")
	if err != nil {
		t.Fatal(err)
	}
	var body localapi.ErrorBody
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || body.Error.Code != localapi.CodeNotFound || !strings.Contains(body.Error.Message, "/v1/nothing") {
		t.Fatalf("unknown route: %d %+v", resp.StatusCode, body)
	}
	resp, _ = c.Post("http://x/v1/set", "application/json", strings.NewReader(`{"actuator":`))
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || body.Error.Code != localapi.CodeBadRequest {
		t.Fatalf("bad body: %d %+v", resp.StatusCode, body)
	}
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
}

func TestStaleAndBusySockets(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: what a crash leaves
	serve(t, stale)

	if _, err := localapi.Listen(stale, "", &localapi.Backend{}, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a socket in use was taken over: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("x"), 0o600)
	if _, err := localapi.Listen(plain, "", &localapi.Backend{}, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file was replaced: %v", err)
	}
}
