package ctl

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The cloud jobs commands (shadowctl job …) speak the AWS IoT control
// plane (service "iot") over HTTPS with SigV4, with the Go SDK's client:
// against shadowsvc or the demo's embedded service (--endpoint-url), or
// against AWS IoT Core itself (--endpoint-url aws). Credentials and region
// are found as the AWS CLI finds them.

// defaultIoTEndpoint is the demo's HTTP API (configs/demo.yaml,
// broker.http.listen).
const defaultIoTEndpoint = "http://127.0.0.1:8080"

// awsEndpoint is the --endpoint-url that means AWS IoT Core's own.
const awsEndpoint = "aws"

// defaultRegion is the region when none is configured: shadowsvc accepts
// any region unless it was given its own.
const defaultRegion = "us-east-1"

// iotFlags are the connection settings of the job commands.
type iotFlags struct {
	endpoint, region, profile, account string
	json                               bool
}

func (f *iotFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoint, "endpoint-url", "", "the AWS IoT control plane `URL`: shadowsvc's --http, or \"aws\" for AWS IoT Core's own (SHADOWGATE_IOT_ENDPOINT, AWS_ENDPOINT_URL_IOT; default "+defaultIoTEndpoint+", the demo's)")
	fs.StringVar(&f.region, "region", "", "AWS `region` (AWS_REGION, the profile's region; default "+defaultRegion+")")
	fs.StringVar(&f.profile, "profile", "", "`profile` of ~/.aws/credentials and ~/.aws/config (AWS_PROFILE)")
	fs.StringVar(&f.account, "account", "", "AWS account `id` for the ARNs of --targets thing names (AWS_ACCOUNT_ID; default: the thing group's, else 000000000000)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
}

// iotClient is the SDK's client with what the errors need to say.
type iotClient struct {
	api      *iot.Client
	endpoint string // as the user would type it
	region   string
	account  string // from credentials or --account; "" when unknown
}

// client loads the AWS configuration (env, ~/.aws/credentials, --profile)
// and checks that it holds credentials.
func (f *iotFlags) client(ctx context.Context) (*iotClient, error) {
	var opts []func(*config.LoadOptions) error
	if f.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(f.profile))
	}
	if f.region != "" {
		opts = append(opts, config.WithRegion(f.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	var noProfile config.SharedConfigProfileNotExistError
	switch {
	case errors.As(err, &noProfile):
		return nil, f.noCredentials()
	case err != nil:
		return nil, usagef("AWS configuration: %v", err)
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = awshttp.NewBuildableClient()
	}
	cfg.HTTPClient = rawCapture{cfg.HTTPClient}
	c := &iotClient{region: cfg.Region, account: f.account}
	endpoint := f.endpoint
	if endpoint == "" {
		endpoint = os.Getenv("SHADOWGATE_IOT_ENDPOINT")
	}
	if endpoint == "" && os.Getenv("AWS_ENDPOINT_URL_IOT") == "" && os.Getenv("AWS_ENDPOINT_URL") == "" {
		endpoint = defaultIoTEndpoint
	}
	var iotOpts []func(*iot.Options)
	switch endpoint {
	case awsEndpoint:
		c.endpoint = "https://iot." + cfg.Region + ".amazonaws.com"
	case "":
		c.endpoint = os.Getenv("AWS_ENDPOINT_URL_IOT") // the SDK reads it (or AWS_ENDPOINT_URL) itself
		if c.endpoint == "" {
			c.endpoint = os.Getenv("AWS_ENDPOINT_URL")
		}
	default:
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("--endpoint-url %q: want http://HOST:PORT or https://HOST[:PORT] (or %q for AWS IoT Core's own)", endpoint, awsEndpoint)
		}
		c.endpoint = endpoint
		iotOpts = append(iotOpts, func(o *iot.Options) { o.BaseEndpoint = aws.String(endpoint) })
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	creds, err := cfg.Credentials.Retrieve(rctx)
	if err != nil || !creds.HasKeys() {
		return nil, f.noCredentials()
	}
	if c.account == "" {
		c.account = creds.AccountID // aws_account_id, AWS_ACCOUNT_ID
	}
	c.api = iot.NewFromConfig(cfg, iotOpts...)
	return c, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// noCredentials says what to set when no keys were found.
func (f *iotFlags) noCredentials() error {
	what := "no AWS credentials found"
	if p := firstOf(f.profile, os.Getenv("AWS_PROFILE")); p != "" {
		what = fmt.Sprintf("no AWS credentials for profile %q", p)
	}
	if file := os.Getenv("AWS_SHARED_CREDENTIALS_FILE"); file != "" {
		if _, err := os.Stat(file); err != nil {
			what += fmt.Sprintf(" (AWS_SHARED_CREDENTIALS_FILE %s: %v)", file, err)
		}
	}
	return &exitError{code: ExitUsage, msg: what + ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put the keys in\n" +
		"~/.aws/credentials (another file: AWS_SHARED_CREDENTIALS_FILE; a profile of it: --profile or AWS_PROFILE).\n" +
		"For the demo (make run):  export AWS_SHARED_CREDENTIALS_FILE=$PWD/configs/demo-credentials"}
}

// explain turns an error of the API into what the operator needs: the AWS
// error code and message, the endpoint that could not be reached.
func (c *iotClient) explain(err error) error {
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &ae):
		msg := ae.ErrorCode() + ": " + ae.ErrorMessage()
		if errors.As(err, &re) {
			msg += fmt.Sprintf(" (HTTP %d from %s)", re.HTTPStatusCode(), c.endpoint)
		}
		return errors.New(msg)
	case errors.Is(err, syscall.ECONNREFUSED):
		return &exitError{code: ExitNoDaemon, msg: fmt.Sprintf("cannot reach the AWS IoT endpoint %s: connection refused. Is the service running there\n"+
			"(make run, or shadowsvc --http)? Another endpoint: --endpoint-url or SHADOWGATE_IOT_ENDPOINT.", c.endpoint)}
	case errors.As(err, &ne):
		return &exitError{code: ExitNoDaemon, msg: fmt.Sprintf("cannot reach the AWS IoT endpoint %s: %v", c.endpoint, err)}
	}
	return err
}

// rawKey holds, in a call's context, where the body of its answer goes.
type rawKey struct{}

// rawCapture is the SDK's HTTP client, keeping a copy of the answer's body
// for the calls that ask (withRaw): --json prints the API's own JSON.
type rawCapture struct{ next aws.HTTPClient }

func (c rawCapture) Do(r *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(r)
	dst, ok := r.Context().Value(rawKey{}).(*[]byte)
	if err != nil || !ok || resp.Body == nil {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", r.URL, err)
	}
	*dst = b
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// withRaw is ctx for a call whose answer's body is wanted in *dst.
func withRaw(ctx context.Context, dst *[]byte) context.Context {
	return context.WithValue(ctx, rawKey{}, dst)
}

// thingArn and the others build the ARNs of names; the region and account
// are the ones the server's own ARNs carry (prefix, "arn:aws:iot:R:A:")
// when known.
func (c *iotClient) arnPrefix() string {
	acct := c.account
	if acct == "" {
		acct = "000000000000"
	}
	return "arn:aws:iot:" + c.region + ":" + acct + ":"
}

// arnPrefixOf is the "arn:…:ACCOUNT:" part of an IoT ARN.
func arnPrefixOf(arn string) (string, bool) {
	i := strings.LastIndex(arn, ":")
	if !strings.HasPrefix(arn, "arn:") || strings.Count(arn, ":") != 5 || i < 0 {
		return "", false
	}
	return arn[:i+1], true
}
