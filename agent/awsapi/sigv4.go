package awsapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// MaxSkew is how far a request's X-Amz-Date may be from the server's clock,
// as AWS allows.
const MaxSkew = 15 * time.Minute

const (
	algorithm  = "AWS4-HMAC-SHA256"
	amzDate    = "X-Amz-Date"
	timeFormat = "20060102T150405Z"
)

// authHeader is a parsed SigV4 Authorization header.
type authHeader struct {
	keyID, date, region, service string
	signedHeaders                []string
	signature                    string
}

// parseAuth reads an Authorization header, or says what AWS says of a bad one.
func parseAuth(h string) (*authHeader, *Error) {
	alg, rest, _ := strings.Cut(h, " ")
	if alg != algorithm {
		// AWS answers an unknown scheme as if no signature were there.
		return nil, Errorf(Forbidden, "%s", MsgMissingToken)
	}
	params := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok {
			params[k] = v
		}
	}
	var missing []string
	for _, k := range []string{"Credential", "Signature", "SignedHeaders"} {
		if params[k] == "" {
			missing = append(missing, "Authorization header requires '"+k+"' parameter.")
		}
	}
	if len(missing) > 0 {
		return nil, Errorf(Forbidden, "%s", strings.Join(missing, " "))
	}
	scope := strings.Split(params["Credential"], "/")
	if len(scope) != 5 {
		return nil, Errorf(Forbidden, "Credential should be scoped with a valid terminator: 'aws4_request'.")
	}
	if scope[4] != "aws4_request" {
		return nil, Errorf(Forbidden, "Credential should be scoped with a valid terminator: 'aws4_request', not '%s'.", scope[4])
	}
	a := &authHeader{keyID: scope[0], date: scope[1], region: scope[2], service: scope[3],
		signedHeaders: strings.Split(params["SignedHeaders"], ";"), signature: params["Signature"]}
	return a, nil
}

// requestTime reads X-Amz-Date and checks it against the scope's date and
// the server's clock (±MaxSkew), with AWS's messages.
func requestTime(r *http.Request, a *authHeader, now time.Time) (time.Time, *Error) {
	v := r.Header.Get(amzDate)
	if v == "" {
		return time.Time{}, Errorf(Forbidden, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	t, err := time.Parse(timeFormat, v)
	if err != nil {
		return time.Time{}, Errorf(Forbidden, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	if d := t.Format("20060102"); d != a.date {
		return time.Time{}, Errorf(Forbidden, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.date, d, v)
	}
	now = now.UTC()
	if t.Before(now.Add(-MaxSkew)) {
		return time.Time{}, Errorf(Forbidden, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			v, now.Add(-MaxSkew).Format(timeFormat), now.Format(timeFormat))
	}
	if t.After(now.Add(MaxSkew)) {
		return time.Time{}, Errorf(Forbidden, "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			v, now.Add(MaxSkew).Format(timeFormat), now.Format(timeFormat))
	}
	return t, nil
}

// verify recomputes the signature of r with the SDK's signer, over the
// headers the client signed and the hash of the body received, and compares
// it with the one sent. It returns why not, for the log (never secrets).
func verify(ctx context.Context, signer *v4.Signer, r *http.Request, body []byte, a *authHeader, k *Key, at time.Time) (ok bool, why string) {
	ok, why = verifyOnce(ctx, signer, r, body, a, k, at, false)
	if !ok && strings.Contains(r.URL.EscapedPath(), "%") {
		// The SDKs escape the path a second time in the canonical request,
		// as SigV4 asks of every service but S3; some signers (curl's
		// --aws-sigv4) do not. Both name the same path.
		if ok2, _ := verifyOnce(ctx, signer, r, body, a, k, at, true); ok2 {
			return true, ""
		}
	}
	return ok, why
}

func verifyOnce(ctx context.Context, signer *v4.Signer, r *http.Request, body []byte, a *authHeader, k *Key, at time.Time, singleEscaped bool) (ok bool, why string) {
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	req := &http.Request{Method: r.Method, URL: u, Host: r.Host, Header: http.Header{}}
	for _, name := range a.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			// The signer signs the length from ContentLength, when above 0.
			req.ContentLength = int64(len(body))
		default:
			if vs := r.Header.Values(name); len(vs) > 0 {
				req.Header[http.CanonicalHeaderKey(name)] = vs
			}
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: k.ID, SecretAccessKey: k.secret}
	opt := func(o *v4.SignerOptions) { o.DisableURIPathEscaping = singleEscaped }
	if err := signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), a.service, a.region, at, opt); err != nil {
		return false, "signer: " + err.Error()
	}
	got, err := parseAuth(req.Header.Get("Authorization"))
	if err != nil {
		return false, "signer output unreadable"
	}
	if strings.Join(got.signedHeaders, ";") != strings.Join(a.signedHeaders, ";") {
		// A header the SDK's signer never signs (such as User-Agent), or one
		// that was signed but not sent.
		return false, "signed headers " + strings.Join(a.signedHeaders, ";") + " cannot be reproduced (the signer signs " + strings.Join(got.signedHeaders, ";") + ")"
	}
	if subtle.ConstantTimeCompare([]byte(got.signature), []byte(a.signature)) != 1 {
		return false, "signature mismatch (wrong secret, or the request changed after signing)"
	}
	return true, ""
}
