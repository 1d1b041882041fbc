package shadowsvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/broker"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// brokers are the three a service meets: mosquitto as installed, mosquitto
// tuned (no in-flight limit: the broker sends as fast as it can), and the
// embedded broker of the demo.
// dropped says whether the broker logged dropping messages for a client
// (a stock mosquitto drops what passes 1000 queued for a slow subscriber).
var brokers = []struct {
	name  string
	start func(t *testing.T) (url string, dropped func(client string) bool)
}{
	{"mosquitto-stock", func(t *testing.T) (string, func(string) bool) { return mosquitto(brokertest.StartStock(t)) }},
	{"mosquitto-tuned", func(t *testing.T) (string, func(string) bool) { return mosquitto(brokertest.Start(t)) }},
	{"embedded", func(t *testing.T) (string, func(string) bool) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		srv, err := broker.Start(addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return "tcp://" + addr, func(string) bool { return false }
	}},
}

func mosquitto(b *brokertest.Broker) (string, func(string) bool) {
	return b.URL(), func(client string) bool {
		return strings.Contains(b.Log(), "Outgoing messages are being dropped for client "+client+".")
	}
}

// responses collects the answers to one thing's requests by clientToken.
type responses struct {
	mu       sync.Mutex
	accepted map[string]int64 // token → version
	rejected map[string]int   // token → code
	get      []byte
}

func (r *responses) handle(_ context.Context, m *link.Message) {
	var body struct {
		ClientToken string `json:"clientToken"`
		Version     int64  `json:"version"`
		Code        int    `json:"code"`
	}
	if json.Unmarshal(m.Payload, &body) != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case strings.HasSuffix(m.Topic, "/get/accepted") && body.ClientToken == "final":
		r.get = m.Payload
	case strings.HasSuffix(m.Topic, "/update/accepted"):
		r.accepted[body.ClientToken] = body.Version
	case strings.HasSuffix(m.Topic, "/update/rejected"):
		r.rejected[body.ClientToken] = body.Code
	}
}

// TestBurstNeverDeadlocks publishes 10,000 updates to one thing at once. The
// service used to wait for each response's PUBACK in its handler: the
// link's queue filled, the reader blocked, the PUBACK could never be read,
// and the service never answered again. Now it keeps answering: every
// request that reaches it is accepted or refused (429) on its topic, a GET
// afterwards is answered, and the document holds the last update the
// service accepted.
func TestBurstNeverDeadlocks(t *testing.T) {
	const n = 10000
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			url, dropped := b.start(t)
			st, err := store.Open(filepath.Join(t.TempDir(), "svc.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			svcLink, _ := link.New(link.Options{Broker: url, ClientID: "svc", MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
			svc := shadowsvc.New(shadowsvc.Options{Root: "things/", Link: svcLink, Store: st})
			runService(t, svc)
			run(t, svcLink)

			r := &responses{accepted: map[string]int64{}, rejected: map[string]int{}}
			app, _ := link.New(link.Options{Broker: url, ClientID: "app", CleanSession: true, MinBackoff: 50 * time.Millisecond, QueueDepth: 2 * n})
			for _, sfx := range []string{"update/accepted", "update/rejected", "get/accepted"} {
				app.Handle("things/burst/shadow/"+sfx, r.handle)
			}
			run(t, app)
			waitUntil(t, "clients connected", 10*time.Second, func() bool { return app.Connected() && svcLink.Connected() })

			pending := make([]link.Pending, 0, n)
			for i := range n {
				p, err := app.PublishAsync("things/burst/shadow/update", false,
					fmt.Appendf(nil, `{"state":{"desired":{"n":%d}},"clientToken":"b-%d"}`, i, i))
				if err != nil {
					t.Fatal(err)
				}
				pending = append(pending, p)
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for _, p := range pending {
				if err := p.Wait(ctx); err != nil {
					t.Fatalf("the broker did not take the burst: %v", err)
				}
			}
			// Still serving: a GET is answered (asked again if the broker
			// dropped it: a stock mosquitto drops what overflows a slow
			// subscriber's queue, and so does the embedded broker).
			gets := 0
			waitUntil(t, "GET answered after the burst", 60*time.Second, func() bool {
				r.mu.Lock()
				answered := r.get != nil
				r.mu.Unlock()
				if !answered && gets*5 < int(time.Since(start).Seconds())+5 {
					gets++
					if _, err := app.PublishAsync("things/burst/shadow/get", false, []byte(`{"clientToken":"final"}`)); err != nil {
						t.Fatal(err)
					}
				}
				return answered
			})
			// Every request that reached the service was answered, accepted
			// or refused for load: the service has nothing waiting, and the
			// broker acknowledged every answer. The app heard them all,
			// unless the broker says it dropped some of them for the app (a
			// stock mosquitto past 1000 queued, when the machine is busy
			// and the app slow): then the answers it did hear must agree
			// with the document.
			lossy, seen := false, ""
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("last seen: %s", seen)
				}
			})
			waitUntil(t, "every request answered", 60*time.Second, func() bool {
				r.mu.Lock()
				defer r.mu.Unlock()
				st := svc.Stats()
				seen = fmt.Sprintf("%d accepted + %d refused heard, %d GETs; service %+v; app link %+v", len(r.accepted), len(r.rejected), gets, st, app.Stats())
				if st.Waiting != 0 || st.Lost != 0 {
					return false
				}
				if int64(len(r.accepted)+len(r.rejected)) >= st.Requests-int64(gets) {
					return true
				}
				lossy = dropped("app")
				return lossy
			})
			r.mu.Lock()
			defer r.mu.Unlock()
			last, lastVersion := -1, int64(0)
			for tok, v := range r.accepted {
				var i int
				fmt.Sscanf(tok, "b-%d", &i)
				if v > lastVersion {
					last, lastVersion = i, v
				}
			}
			for tok, code := range r.rejected {
				if code != 429 {
					t.Fatalf("%s rejected with %d", tok, code)
				}
			}
			var doc struct {
				State struct {
					Desired struct{ N int } `json:"desired"`
				} `json:"state"`
				Version int64 `json:"version"`
			}
			if err := json.Unmarshal(r.get, &doc); err != nil {
				t.Fatal(err)
			}
			if lossy && doc.Version > lastVersion {
				lastVersion, last = doc.Version, doc.State.Desired.N // its answer was among the dropped
			}
			if doc.Version != lastVersion || doc.State.Desired.N != last {
				t.Fatalf("GET shows n=%d at version %d; the last accepted update was n=%d at version %d", doc.State.Desired.N, doc.Version, last, lastVersion)
			}
			if lossy {
				t.Logf("the broker dropped answers for the app: %d of %d requests' answers heard", len(r.accepted)+len(r.rejected), svc.Stats().Requests)
			} else if int64(len(r.accepted)) != lastVersion {
				t.Fatalf("%d updates accepted, version %d", len(r.accepted), lastVersion)
			}
			t.Logf("%d accepted, %d answered 429; stats %+v", len(r.accepted), len(r.rejected), svc.Stats())
		})
	}
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
