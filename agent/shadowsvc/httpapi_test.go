package shadowsvc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane/types"
	"github.com/aws/smithy-go"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
)

// testCredentials is a credentials file as an operator writes it: an
// unrestricted key, one limited to thing-a, a reader, and a publisher.
const testCredentials = `# shadowgate test keys
[default]
aws_access_key_id = AKIDADMIN0000000001
aws_secret_access_key = admin-secret-0000000000000000000000000
region = us-east-1

[thing-a]
aws_access_key_id = AKIDTHINGA000000001
aws_secret_access_key = thing-a-secret-00000000000000000000000
shadowgate_things = thing-a

[reader]
aws_access_key_id = AKIDREADER000000001
aws_secret_access_key = reader-secret-000000000000000000000000
shadowgate_actions = read

[publisher]
aws_access_key_id = AKIDPUBLISH00000001
aws_secret_access_key = publisher-secret-000000000000000000000
shadowgate_actions = publish
shadowgate_things = gw-*
shadowgate_topics = app/*, $aws/things/gw-*/shadow/update
`

// httpEnv is a shadow service on mosquitto with its HTTP door on a loopback
// httptest server, and an MQTT client watching every shadow topic.
type httpEnv struct {
	mqtt   *client
	svc    *shadowsvc.Service
	broker *brokertest.Broker
	url    string
	file   string // the credentials file
}

func newHTTPEnv(t testing.TB, o awsapi.Options) *httpEnv {
	t.Helper()
	c, svc, b := setup(t, "$aws/things/")
	file := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(file, []byte(testCredentials), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := awsapi.LoadCredentials(file)
	if err != nil {
		t.Fatal(err)
	}
	if o.Credentials == nil {
		o.Credentials = creds
	}
	srv := awsapi.New(o)
	srv.Handle(svc.Routes()...)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &httpEnv{mqtt: c, svc: svc, broker: b, url: ts.URL, file: file}
}

// client is the real SDK client for a profile of the credentials file, read
// by the SDK's own loader as an app would; no retries, so that each call is
// one request.
func (e *httpEnv) client(t testing.TB, profile string) *iotdataplane.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedCredentialsFiles([]string{e.file}), config.WithSharedConfigFiles([]string{}),
		config.WithSharedConfigProfile(profile), config.WithRegion("us-east-1"), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	return iotdataplane.NewFromConfig(cfg, func(o *iotdataplane.Options) { o.BaseEndpoint = aws.String(e.url) })
}

// staticClient is an SDK client with a key given in the code.
func staticClient(url, id, secret string) *iotdataplane.Client {
	return iotdataplane.New(iotdataplane.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
	})
}

// apiCode is the AWS error code of err and its message.
func apiCode(err error) (code, msg string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	return "", ""
}

func wantCode(t *testing.T, err error, code string, msgPart string) {
	t.Helper()
	got, msg := apiCode(err)
	if got != code || !strings.Contains(msg, msgPart) {
		t.Fatalf("want %s %q, got %v", code, msgPart, err)
	}
}

func same(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if err := shadowtest.SameJSON(got, []byte(want)); err != nil {
		t.Fatalf("%s:\n got %s\nwant %s\n%v", what, got, want, err)
	}
}

func TestHTTPEveryOperation(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	api := e.client(t, "default")
	ctx := context.Background()
	for _, name := range []string{"", "doors"} {
		t.Run("shadow="+name, func(t *testing.T) {
			var sn *string
			if name != "" {
				sn = aws.String(name)
			}
			thing := aws.String("gw-ops")
			_, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: thing, ShadowName: sn})
			var nf *types.ResourceNotFoundException
			if !errors.As(err, &nf) {
				t.Fatalf("get before create: want ResourceNotFoundException, got %v", err)
			}
			up, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: thing, ShadowName: sn,
				Payload: []byte(`{"state":{"desired":{"on":true}},"clientToken":"http-1"}`)})
			if err != nil {
				t.Fatal(err)
			}
			same(t, "update", up.Payload, `{"state":{"desired":{"on":true}},"metadata":{"desired":{"on":{"timestamp":0}}},"version":1,"timestamp":0,"clientToken":"http-1"}`)
			got, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: thing, ShadowName: sn})
			if err != nil {
				t.Fatal(err)
			}
			same(t, "get", got.Payload, `{"state":{"desired":{"on":true},"delta":{"on":true}},"metadata":{"desired":{"on":{"timestamp":0}}},"version":1,"timestamp":0}`)
			del, err := api.DeleteThingShadow(ctx, &iotdataplane.DeleteThingShadowInput{ThingName: thing, ShadowName: sn})
			if err != nil {
				t.Fatal(err)
			}
			same(t, "delete", del.Payload, `{"version":1,"timestamp":0}`)
			_, err = api.DeleteThingShadow(ctx, &iotdataplane.DeleteThingShadowInput{ThingName: thing, ShadowName: sn})
			wantCode(t, err, "ResourceNotFoundException", "No shadow exists with name")
			// Created again, the version goes on, as on AWS: the delete
			// itself took version 2 (agent/shadow's corpus, delete entries).
			up, err = api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: thing, ShadowName: sn, Payload: []byte(`{"state":{"reported":{"on":false}}}`)})
			if err != nil {
				t.Fatal(err)
			}
			same(t, "update after delete", up.Payload, `{"state":{"reported":{"on":false}},"metadata":{"reported":{"on":{"timestamp":0}}},"version":3,"timestamp":0}`)
		})
	}

	t.Run("ListNamedShadowsForThing", func(t *testing.T) {
		want := []string{"a", "b:1", "c_2", "d-3", "e"}
		for _, n := range append([]string{""}, want...) {
			_, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-list"), ShadowName: aws.String(n),
				Payload: []byte(`{"state":{"reported":{"x":1}}}`)})
			if n == "" {
				_, err = api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-list"), Payload: []byte(`{"state":{"reported":{"x":1}}}`)})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		// A deleted shadow is not listed; another thing's are not either.
		if _, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-list"), ShadowName: aws.String("gone"), Payload: []byte(`{"state":{"reported":{"x":1}}}`)}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.DeleteThingShadow(ctx, &iotdataplane.DeleteThingShadowInput{ThingName: aws.String("gw-list"), ShadowName: aws.String("gone")}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-list2"), ShadowName: aws.String("other"), Payload: []byte(`{"state":{"reported":{"x":1}}}`)}); err != nil {
			t.Fatal(err)
		}
		var all []string
		var token *string
		pages := 0
		for {
			out, err := api.ListNamedShadowsForThing(ctx, &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("gw-list"), PageSize: aws.Int32(2), NextToken: token})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(out.Results) > 2 || out.Timestamp == 0 {
				t.Fatalf("page %d: %+v", pages, out)
			}
			all = append(all, out.Results...)
			if out.NextToken == nil {
				break
			}
			token = out.NextToken
		}
		if !sort.StringsAreSorted(all) || strings.Join(all, ",") != strings.Join(want, ",") || pages != 3 {
			t.Fatalf("listed %v in %d pages, want %v in 3", all, pages, want)
		}
		out, err := api.ListNamedShadowsForThing(ctx, &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("nobody")})
		if err != nil || out.Results == nil || len(out.Results) != 0 {
			t.Fatalf("a thing without shadows: %+v %v", out, err)
		}
		_, err = api.ListNamedShadowsForThing(ctx, &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("gw-list"), NextToken: aws.String("!!")})
		wantCode(t, err, "InvalidRequestException", "nextToken")
	})

	t.Run("Publish", func(t *testing.T) {
		sub := subscribe(t, e.broker, "app/#")
		for _, qos := range []int32{0, 1} {
			topic := fmt.Sprintf("app/qos%d/a b", qos)
			e.mqtt.mu.Lock()
			e.mqtt.msgs = nil
			e.mqtt.mu.Unlock()
			// A shadow request published over HTTP reaches the shadow
			// service through the broker, as on AWS.
			_, err := api.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String("$aws/things/gw-pub/shadow/update"), Qos: qos,
				Payload: []byte(`{"state":{"reported":{"via":"publish"}}}`)})
			if err != nil {
				t.Fatal(err)
			}
			waitMQTT(t, e.mqtt, "$aws/things/gw-pub/shadow/update/accepted")
			_, err = api.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String(topic), Qos: qos, Payload: []byte("hello")})
			if err != nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
			if got := waitMQTT(t, sub, topic); string(got) != "hello" {
				t.Fatalf("%s: %q", topic, got)
			}
		}
		// Reserved topics that are the service's own are refused.
		for _, topic := range []string{"$aws/things/gw-pub/shadow/update/accepted", "$aws/events/presence/connected/x", "$SYS/broker", "$aws/things/gw-pub/shadow/name/n/get/accepted"} {
			_, err := api.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String(topic), Payload: []byte("x")})
			wantCode(t, err, "ForbiddenException", "Forbidden")
		}
		_, err := api.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String("app/+/x"), Payload: []byte("x")})
		wantCode(t, err, "InvalidRequestException", "wildcard")
	})
}

// subscribe is an MQTT client that collects what matches filter.
func subscribe(t testing.TB, b *brokertest.Broker, filter string) *client {
	t.Helper()
	c := &client{}
	c.l, _ = link.New(link.Options{Broker: b.URL(), ClientID: "sub-" + t.Name(), CleanSession: true, MinBackoff: 50 * time.Millisecond})
	c.l.Handle(filter, func(_ context.Context, m *link.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	run(t, c.l)
	deadline := time.Now().Add(10 * time.Second)
	for !c.l.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("subscriber did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c
}

func waitMQTT(t *testing.T, c *client, topic string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, m := range c.msgs {
			if m.Topic == topic {
				c.mu.Unlock()
				return m.Payload
			}
		}
		c.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no MQTT message on %s", topic)
	return nil
}

func TestHTTPAndMQTTSeeEachOther(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	api := e.client(t, "default")
	ctx := context.Background()
	// An update over MQTT is what HTTP reads.
	got := e.mqtt.exchange(t, shadow.Topic{Thing: "gw-both", Op: shadow.OpUpdate}, []byte(`{"state":{"reported":{"temp":21}}}`), 2)
	if got[shadow.SuffixAccepted] == nil {
		t.Fatalf("MQTT update: %v", got)
	}
	out, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-both")})
	if err != nil {
		t.Fatal(err)
	}
	same(t, "HTTP get of an MQTT update", out.Payload, `{"state":{"reported":{"temp":21}},"metadata":{"reported":{"temp":{"timestamp":0}}},"version":1,"timestamp":0}`)

	// An update over HTTP publishes what one over MQTT does: accepted,
	// documents and the delta the device acts on.
	e.mqtt.mu.Lock()
	e.mqtt.msgs = nil
	e.mqtt.mu.Unlock()
	up, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-both"),
		Payload: []byte(`{"state":{"desired":{"temp":25}},"clientToken":"app-7"}`)})
	if err != nil {
		t.Fatal(err)
	}
	delta := waitMQTT(t, e.mqtt, "$aws/things/gw-both/shadow/update/delta")
	same(t, "delta", delta, `{"version":2,"timestamp":0,"state":{"temp":25},"metadata":{"temp":{"timestamp":0}},"clientToken":"app-7"}`)
	accepted := waitMQTT(t, e.mqtt, "$aws/things/gw-both/shadow/update/accepted")
	if !bytes.Equal(accepted, up.Payload) {
		t.Fatalf("update/accepted %s, HTTP answered %s", accepted, up.Payload)
	}
	docs := waitMQTT(t, e.mqtt, "$aws/things/gw-both/shadow/update/documents")
	same(t, "documents", docs, `{"previous":{"state":{"reported":{"temp":21}},"metadata":{"reported":{"temp":{"timestamp":0}}},"version":1},`+
		`"current":{"state":{"desired":{"temp":25},"reported":{"temp":21}},"metadata":{"desired":{"temp":{"timestamp":0}},"reported":{"temp":{"timestamp":0}}},"version":2},"timestamp":0,"clientToken":"app-7"}`)

	// Versions and 409s are shared: MQTT's next version is 3, and an HTTP
	// update with the old version conflicts.
	got = e.mqtt.exchange(t, shadow.Topic{Thing: "gw-both", Op: shadow.OpUpdate}, []byte(`{"state":{"reported":{"temp":25}},"version":2}`), 2)
	if h, err := shadow.ParseAccepted(got[shadow.SuffixAccepted]); err != nil || h.Version != 3 {
		t.Fatalf("MQTT update after HTTP: %v %v", got, err)
	}
	_, err = api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-both"), Payload: []byte(`{"state":{"desired":{"temp":1}},"version":2}`)})
	var conflict *types.ConflictException
	if !errors.As(err, &conflict) || conflict.ErrorMessage() != shadow.MsgVersionConflict {
		t.Fatalf("stale version over HTTP: want ConflictException %q, got %v", shadow.MsgVersionConflict, err)
	}

	// An HTTP get, and a rejected HTTP request, publish nothing on MQTT.
	e.mqtt.mu.Lock()
	e.mqtt.msgs = nil
	e.mqtt.mu.Unlock()
	if _, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-both")}); err != nil {
		t.Fatal(err)
	}
	_, err = api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-both"), Payload: []byte(`{"state":`)})
	var invalid *types.InvalidRequestException
	if !errors.As(err, &invalid) || invalid.ErrorMessage() != shadow.MsgInvalidJSON {
		t.Fatalf("bad JSON: %v", err)
	}
	// Then an MQTT request: once its answer is in, any earlier message is too.
	e.mqtt.exchange(t, shadow.Topic{Thing: "gw-both", Op: shadow.OpGet}, nil, 1)
	e.mqtt.mu.Lock()
	defer e.mqtt.mu.Unlock()
	for _, m := range e.mqtt.msgs {
		if m.Topic != "$aws/things/gw-both/shadow/get/accepted" {
			t.Errorf("published for an HTTP get or a rejected HTTP update: %s %s", m.Topic, m.Payload)
		}
	}
}

func TestHTTPShadowErrors(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	api := e.client(t, "default")
	ctx := context.Background()
	for _, c := range []struct {
		payload, code, msg string
	}{
		{`{"state":{"desired":{"a":1}},"version":5}`, "ConflictException", shadow.MsgVersionConflict},
		{`{"clientToken":"x"}`, "InvalidRequestException", shadow.MsgMissingState},
		{`{"state":{"reported":{"blob":"` + strings.Repeat("z", 9000) + `"}}}`, "RequestEntityTooLargeException", shadow.MsgTooLarge},
		{"{\"state\":{\"reported\":{\"a\":\"\xff\"}}}", "UnsupportedDocumentEncodingException", shadow.MsgBadEncoding},
	} {
		_, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-err"), Payload: []byte(c.payload)})
		wantCode(t, err, c.code, c.msg)
	}
	_, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-err"), ShadowName: aws.String("bad name")})
	wantCode(t, err, "InvalidRequestException", "at 'shadowName' failed to satisfy constraint")
	// The body is capped before it is read: over 128 KB is 413.
	_, err = api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-err"), Payload: bytes.Repeat([]byte(" "), 200<<10)})
	wantCode(t, err, "RequestEntityTooLargeException", awsapi.MsgTooLarge)
}

func TestHTTPAuthentication(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	ctx := context.Background()
	in := &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-auth")}
	_, err := staticClient(e.url, "AKIDADMIN0000000001", "not-the-secret").GetThingShadow(ctx, in)
	wantCode(t, err, "ForbiddenException", awsapi.MsgSignatureInvalid)
	_, err = staticClient(e.url, "AKIDNOBODY000000000", "whatever").GetThingShadow(ctx, in)
	wantCode(t, err, "ForbiddenException", awsapi.MsgInvalidToken)
	// The right key works (404: no such shadow yet).
	_, err = staticClient(e.url, "AKIDADMIN0000000001", "admin-secret-0000000000000000000000000").GetThingShadow(ctx, in)
	wantCode(t, err, "ResourceNotFoundException", "No shadow")

	// No signature at all.
	resp, err := http.Get(e.url + "/things/gw-auth/shadow")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var body struct{ Message, TraceID string }
	json.Unmarshal(b, &body)
	if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-ErrorType") != "ForbiddenException:" || body.Message != awsapi.MsgMissingToken ||
		body.TraceID == "" || resp.Header.Get("X-Amzn-RequestId") != body.TraceID {
		t.Fatalf("unsigned: %d %v %s", resp.StatusCode, resp.Header, b)
	}
}

func TestHTTPSignatureTimeWindow(t *testing.T) {
	// The server's clock 20 minutes ahead of the client's: the signature has
	// expired; 20 minutes behind: not yet current. Within 15, accepted.
	for _, c := range []struct {
		skew time.Duration
		msg  string
	}{
		{20 * time.Minute, "Signature expired: "},
		{-20 * time.Minute, "Signature not yet current: "},
		{14 * time.Minute, ""},
	} {
		t.Run(c.skew.String(), func(t *testing.T) {
			e := newHTTPEnv(t, awsapi.Options{Now: func() time.Time { return time.Now().Add(c.skew) }})
			_, err := e.client(t, "default").GetThingShadow(context.Background(), &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-time")})
			if c.msg == "" {
				wantCode(t, err, "ResourceNotFoundException", "")
				return
			}
			wantCode(t, err, "ForbiddenException", c.msg)
		})
	}
}

func TestHTTPAuthorization(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	ctx := context.Background()
	admin, thingA, reader, publisher := e.client(t, "default"), e.client(t, "thing-a"), e.client(t, "reader"), e.client(t, "publisher")
	for _, thing := range []string{"thing-a", "thing-b"} {
		if _, err := admin.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String(thing), Payload: []byte(`{"state":{"reported":{"x":1}}}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := thingA.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("thing-a")}); err != nil {
		t.Fatalf("thing-a key on thing-a: %v", err)
	}
	_, err := thingA.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("thing-b")})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
	_, err = thingA.ListNamedShadowsForThing(ctx, &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("thing-b")})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
	if _, err := reader.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("thing-b")}); err != nil {
		t.Fatalf("reader get: %v", err)
	}
	_, err = reader.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("thing-b"), Payload: []byte(`{"state":{"desired":{"x":2}}}`)})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
	_, err = reader.DeleteThingShadow(ctx, &iotdataplane.DeleteThingShadowInput{ThingName: aws.String("thing-b")})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
	_, err = reader.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String("app/x")})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
	// The publisher: app/* and the shadow update topic of gw-* things only.
	for topic, ok := range map[string]bool{"app/x": true, "app/x/y": true, "other/x": false,
		"$aws/things/gw-1/shadow/update": true, "$aws/things/thing-b/shadow/update": false, "$aws/things/gw-1/shadow/delete": false} {
		_, err := publisher.Publish(ctx, &iotdataplane.PublishInput{Topic: aws.String(topic), Payload: []byte(`{}`)})
		if ok && err != nil {
			t.Errorf("publisher on %s: %v", topic, err)
		}
		if code, _ := apiCode(err); !ok && code != "ForbiddenException" {
			t.Errorf("publisher on %s: want ForbiddenException, got %v", topic, err)
		}
	}
	_, err = publisher.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("gw-1")})
	wantCode(t, err, "ForbiddenException", awsapi.MsgForbidden)
}

func TestHTTPThrottling(t *testing.T) {
	// A clock that stands still: the bucket never refills, so the third
	// request of a burst of two is refused, whatever the machine's speed.
	start := time.Now()
	e := newHTTPEnv(t, awsapi.Options{Rate: 1, Burst: 2, Now: func() time.Time { return start }})
	admin, reader := e.client(t, "default"), e.client(t, "reader")
	in := &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("gw-throttle")}
	for i := 0; i < 2; i++ {
		if _, err := admin.ListNamedShadowsForThing(context.Background(), in); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err := admin.ListNamedShadowsForThing(context.Background(), in)
	var th *types.ThrottlingException
	if !errors.As(err, &th) || th.ErrorMessage() != awsapi.MsgRateExceeded {
		t.Fatalf("third request: want ThrottlingException, got %v", err)
	}
	// Buckets are per key.
	if _, err := reader.ListNamedShadowsForThing(context.Background(), in); err != nil {
		t.Fatalf("another key: %v", err)
	}
}

func TestHTTPMalformedRequestsNeverCrash(t *testing.T) {
	e := newHTTPEnv(t, awsapi.Options{})
	auth := "AWS4-HMAC-SHA256 Credential=AKIDADMIN0000000001/20200101/us-east-1/iotdata/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
	for _, c := range []struct {
		method, path, auth, date, body string
		want                           int
	}{
		{"GET", "/things/x/shadow", "Bearer abc", "", "", 403},
		{"GET", "/things/x/shadow", "AWS4-HMAC-SHA256", "", "", 403},
		{"GET", "/things/x/shadow", "AWS4-HMAC-SHA256 Credential=, Signature=, SignedHeaders=", "", "", 403},
		{"GET", "/things/x/shadow", "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=1", "", "", 403},
		{"GET", "/things/x/shadow", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=1", "", "", 403},
		{"GET", "/things/x/shadow", auth, "", "", 403},
		{"GET", "/things/x/shadow", auth, "yesterday", "", 403},
		{"GET", "/things/x/shadow", auth, "20200101T000000Z", "", 403},
		{"GET", "/things/x/shadow", auth, time.Now().UTC().Format("20060102T150405Z"), "", 403},
		{"PUT", "/things/x/shadow", "", "", "", 403},
		{"GET", "/nowhere", "", "", "", 403},
		{"POST", "/things/x/shadow", "", "", strings.Repeat("x", 300<<10), 413},
	} {
		req, _ := http.NewRequest(c.method, e.url+c.path, strings.NewReader(c.body))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		if c.date != "" {
			req.Header.Set("X-Amz-Date", c.date)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || !json.Valid(b) || resp.Header.Get("X-Amzn-ErrorType") == "" {
			t.Errorf("%s %s auth %q date %q: %d %s, want %d with an AWS error", c.method, c.path, c.auth, c.date, resp.StatusCode, b, c.want)
		}
	}
	// Signed requests with odd paths, names and methods get AWS errors.
	api := e.client(t, "default")
	ctx := context.Background()
	for _, thing := range []string{"a b", strings.Repeat("t", 129), "ü", "x/y", "%", "..", "$aws"} {
		_, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String(thing)})
		if code, _ := apiCode(err); code != "InvalidRequestException" && code != "MethodNotAllowedException" {
			t.Errorf("thing %q: %v", thing, err)
		}
	}
	// Raw bytes on the socket.
	for _, raw := range []string{"GARBAGE\r\n\r\n", "GET /things/x/shadow HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 3000) + "\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte(raw))
		io.ReadAll(conn)
		conn.Close()
	}
	if _, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-ok"), Payload: []byte(`{"state":{"reported":{"ok":true}}}`)}); err != nil {
		t.Fatalf("still serving: %v", err)
	}
}
