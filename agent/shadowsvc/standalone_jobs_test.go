package shadowsvc_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
)

// runStandalone runs shadowsvc with its HTTP API until the test ends.
func runStandalone(t *testing.T, broker string, o shadowsvc.StandaloneOptions) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- shadowsvc.RunStandalone(ctx, o, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunStandalone: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("RunStandalone did not stop")
		}
	})
}

// TestStandaloneServesJobsOverHTTP: shadowsvc --http serves the jobs
// control plane beside iot-data, with --http-region in every ARN; with
// --no-jobs it does not.
func TestStandaloneServesJobsOverHTTP(t *testing.T) {
	b := brokertest.Start(t)
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	os.WriteFile(credFile, []byte(testCredentials), 0o600)
	addr, noJobsAddr := freeAddr(t), freeAddr(t)
	runStandalone(t, b.URL(), shadowsvc.StandaloneOptions{Broker: b.URL(), ClientID: "svc-jobs", Root: "$aws/things/", StorePath: filepath.Join(dir, "svc.db"),
		LogLevel: "info", HTTP: shadowsvc.HTTPOptions{Addr: addr, Credentials: credFile, Region: "eu-central-1"}})
	runStandalone(t, b.URL(), shadowsvc.StandaloneOptions{Broker: b.URL(), ClientID: "svc-nojobs", Root: "other/", StorePath: filepath.Join(dir, "other.db"),
		LogLevel: "info", NoJobs: true, HTTP: shadowsvc.HTTPOptions{Addr: noJobsAddr, Credentials: credFile}})
	client := func(addr, region string) *iot.Client {
		return iot.New(iot.Options{Region: region, BaseEndpoint: aws.String("http://" + addr), Retryer: aws.NopRetryer{},
			Credentials: credentials.NewStaticCredentialsProvider("AKIDADMIN0000000001", "admin-secret-0000000000000000000000000", "")})
	}
	api := client(addr, "eu-central-1")
	var out *iot.CreateJobOutput
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		out, err = api.CreateJob(context.Background(), &iot.CreateJobInput{JobId: aws.String("standalone-1"),
			Targets: []string{"arn:aws:iot:us-east-1:123456789012:thing/gw-1"}, Document: aws.String(`{"operation":"ping"}`)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadowsvc --http did not create the job: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if aws.ToString(out.JobArn) != "arn:aws:iot:eu-central-1:000000000000:job/standalone-1" {
		t.Fatalf("job ARN with --http-region: %s", aws.ToString(out.JobArn))
	}
	d, err := api.DescribeJobExecution(context.Background(), &iot.DescribeJobExecutionInput{JobId: aws.String("standalone-1"), ThingName: aws.String("gw-1")})
	if err != nil || aws.ToString(d.Execution.ThingArn) != "arn:aws:iot:eu-central-1:000000000000:thing/gw-1" {
		t.Fatalf("execution: %+v %v", d, err)
	}

	deadline = time.Now().Add(20 * time.Second)
	for {
		_, err := client(noJobsAddr, "us-east-1").ListJobs(context.Background(), &iot.ListJobsInput{})
		code, _ := apiCode(err)
		if code == "MethodNotAllowedException" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadowsvc --no-jobs: ListJobs answered %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
