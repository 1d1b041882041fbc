package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

const testKeys = "[default]\naws_access_key_id = AKIDE2E000000000001\naws_secret_access_key = e2e-secret-000000000000000000000000000\n"

// httpAPI serves the cloud's shadow service over HTTP and returns an SDK
// client for it.
func (c *cloud) httpAPI(t testing.TB) *iotdataplane.Client {
	t.Helper()
	creds, err := awsapi.ParseCredentials([]byte(testKeys))
	if err != nil {
		t.Fatal(err)
	}
	srv := awsapi.New(awsapi.Options{Credentials: creds, Rate: -1})
	srv.Handle(c.svc.Routes()...)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return iotdataplane.New(iotdataplane.Options{Region: "eu-west-1", BaseEndpoint: aws.String(ts.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDE2E000000000001", "e2e-secret-000000000000000000000000000", "")})
}

// httpShadow polls GetThingShadow over HTTP until ok accepts the document.
func httpShadow(t *testing.T, api *iotdataplane.Client, thing, name, what string, ok func(g *shadow.GetAccepted) bool) *shadow.GetAccepted {
	t.Helper()
	in := &iotdataplane.GetThingShadowInput{ThingName: aws.String(thing)}
	if name != "" {
		in.ShadowName = aws.String(name)
	}
	var last []byte
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := api.GetThingShadow(context.Background(), in)
		if err == nil {
			last = out.Payload
			g, err := shadow.ParseGetAccepted(out.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if ok(g) {
				return g
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting over HTTP for %s; last %s", what, last)
	return nil
}

func TestHTTPDesiredReachesActuator(t *testing.T) {
	c := newCloud(t)
	api := c.httpAPI(t)
	cfg, _ := gatewayConfig(t, "gw-http", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	httpShadow(t, api, "gw-http", "", "the gateway's shadow", func(g *shadow.GetAccepted) bool { return reported(g, "porch_light", "on") == false })

	// An app sets desired over HTTP; the delta goes out on MQTT, the gateway
	// drives the sim actuator and reports, and the app reads it back.
	_, err := api.UpdateThingShadow(context.Background(), &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-http"),
		Payload: []byte(`{"state":{"desired":{"porch_light":{"on":true},"gate_motor":{"speed":55}}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "desired over HTTP applied on the sim actuators", func() bool {
		return read(t, d, "porch_light")["on"] == true && num(read(t, d, "gate_motor")["speed"]) == "55"
	})
	httpShadow(t, api, "gw-http", "", "reported state over HTTP", func(g *shadow.GetAccepted) bool {
		return reported(g, "porch_light", "on") == true && num(reported(g, "gate_motor", "speed")) == "55" && g.State.Delta == nil
	})

	// The named shadow, the same way.
	_, err = api.UpdateThingShadow(context.Background(), &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("gw-http"), ShadowName: aws.String("doors"),
		Payload: []byte(`{"state":{"desired":{"front_door":{"locked":false}}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "door unlocked", func() bool { return read(t, d, "front_door")["locked"] == false })
	httpShadow(t, api, "gw-http", "doors", "door reported over HTTP", func(g *shadow.GetAccepted) bool {
		return reported(g, "front_door", "locked") == false && g.State.Delta == nil
	})
	names, err := api.ListNamedShadowsForThing(context.Background(), &iotdataplane.ListNamedShadowsForThingInput{ThingName: aws.String("gw-http")})
	if err != nil || strings.Join(names.Results, ",") != "doors" {
		t.Fatalf("named shadows: %+v %v", names, err)
	}
}

// TestDemoHTTPWithAWSCLI runs the demo's own configuration (configs/demo.yaml
// and configs/demo-credentials, on free ports) and the README's aws iot-data
// command against it.
func TestDemoHTTPWithAWSCLI(t *testing.T) {
	awsBin, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("the AWS CLI (aws) is not installed: the README's aws iot-data commands are not checked (pip install awscli, or AWS CLI v2, to run this test)")
	}
	credFile, _ := filepath.Abs("../../configs/demo-credentials")
	dir := t.TempDir()
	cfg, _, httpAddr := demoOnFreePorts(t)
	d := gateway(t, cfg)

	cli := func(env []string, args ...string) (string, string, error) {
		cmd := exec.Command(awsBin, args...)
		// Only the README's settings: no AWS_* of whoever runs the tests.
		cmd.Env = append([]string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "AWS_CONFIG_FILE=" + filepath.Join(dir, "none")}, env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	endpoint := "http://" + httpAddr
	readme := []string{"AWS_SHARED_CREDENTIALS_FILE=" + credFile}
	var doc map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The README's command: AWS_SHARED_CREDENTIALS_FILE=configs/demo-credentials aws iot-data get-thing-shadow
		//   --thing-name demo-gw --endpoint-url http://127.0.0.1:8080 --region us-east-1 /dev/stdout
		out, errOut, err := cli(readme, "iot-data", "get-thing-shadow", "--thing-name", "demo-gw", "--endpoint-url", endpoint, "--region", "us-east-1", "/dev/stdout")
		if err == nil && json.NewDecoder(strings.NewReader(out)).Decode(&doc) == nil && strings.Contains(out, `"porch_light"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aws iot-data get-thing-shadow: %v\nstdout %s\nstderr %s", err, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Desired set with the CLI reaches the sim light.
	desired := filepath.Join(dir, "desired.json")
	os.WriteFile(desired, []byte(`{"state":{"desired":{"porch_light":{"on":true}}}}`), 0o600)
	if _, errOut, err := cli(readme, "iot-data", "update-thing-shadow", "--thing-name", "demo-gw", "--payload", "fileb://"+desired,
		"--endpoint-url", endpoint, "--region", "us-east-1", filepath.Join(dir, "out.json")); err != nil {
		t.Fatalf("update-thing-shadow: %v %s", err, errOut)
	}
	waitFor(t, "porch light on", func() bool { return read(t, d, "porch_light")["on"] == true })
	out, errOut, err := cli(readme, "iot-data", "list-named-shadows-for-thing", "--thing-name", "demo-gw", "--endpoint-url", endpoint, "--region", "us-east-1")
	if err != nil || !strings.Contains(out, `"doors"`) {
		t.Fatalf("list-named-shadows-for-thing: %v %s %s", err, out, errOut)
	}
	// The read-only demo key cannot write; a wrong secret is refused as AWS does.
	_, errOut, err = cli(append(readme, "AWS_PROFILE=demo-reader"), "iot-data", "delete-thing-shadow", "--thing-name", "demo-gw", "--endpoint-url", endpoint, "--region", "us-east-1", filepath.Join(dir, "del.json"))
	if err == nil || !strings.Contains(errOut, "(ForbiddenException) when calling the DeleteThingShadow operation: Forbidden") {
		t.Fatalf("reader deleting: %v %s", err, errOut)
	}
	_, errOut, err = cli([]string{"AWS_ACCESS_KEY_ID=AKIASHADOWGATEDEMO00", "AWS_SECRET_ACCESS_KEY=wrong"}, "iot-data", "get-thing-shadow", "--thing-name", "demo-gw", "--endpoint-url", endpoint, "--region", "us-east-1", "/dev/stdout")
	if err == nil || !strings.Contains(errOut, "(ForbiddenException) when calling the GetThingShadow operation: "+awsapi.MsgSignatureInvalid) {
		t.Fatalf("wrong secret: %v %s", err, errOut)
	}
}
