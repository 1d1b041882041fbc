package shadowsvc_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest/mqttdoor"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// conformanceService runs shadowsvc on a fresh mosquitto, with its bbolt
// file, until the test ends, and returns the broker's URL.
func conformanceService(t *testing.T, root string) string {
	t.Helper()
	b := brokertest.Start(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "svc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := link.New(link.Options{Broker: b.URL(), ClientID: "conformance-svc", MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, shadowsvc.New(shadowsvc.Options{Root: root, Link: l, Store: st}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for !l.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("shadowsvc did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return b.URL()
}

// TestCorpusOverMQTT plays the whole conformance corpus against shadowsvc
// over a real mosquitto, under AWS's topic root and under a plain one.
func TestCorpusOverMQTT(t *testing.T) {
	for _, root := range []string{"$aws/things/", "things/"} {
		t.Run(strings.TrimSuffix(root, "/"), func(t *testing.T) {
			url := conformanceService(t, root)
			shadowtest.RunCorpus(t, mqttdoor.New(t, url, root), shadowtest.Options{})
		})
	}
}
