package link

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"
)

// ALPNAWS is the protocol AWS IoT Core needs to speak MQTT on port 443.
const ALPNAWS = "x-amzn-mqtt-ca"

// TLSFiles names PEM files: the CA bundle and the client certificate and key
// for mutual TLS. Empty fields are left out.
type TLSFiles struct {
	CA, Cert, Key string
}

// TLSConfig loads the files for broker. Errors name the file and say what
// is wrong with it. It returns nil for a broker URL that is not TLS and has
// no files.
func TLSConfig(broker string, f TLSFiles) (*tls.Config, error) {
	u, err := url.Parse(broker)
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrBadURL, broker)
	}
	secure := false
	switch u.Scheme {
	case "ssl", "tls", "mqtts", "wss":
		secure = true
	}
	if !secure {
		if f != (TLSFiles{}) {
			return nil, fmt.Errorf("TLS files are set but broker %s is not a TLS URL: use tls:// or ssl://", broker)
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("read CA file %s: %w", f.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", f.CA)
		}
		cfg.RootCAs = pool
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("client certificate and key go together: cert %q, key %q", f.Cert, f.Key)
	}
	if f.Cert != "" {
		for _, p := range []string{f.Cert, f.Key} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("read %s: %w", p, err)
			}
		}
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s with key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if u.Port() == "443" && u.Scheme != "wss" {
		cfg.NextProtos = []string{ALPNAWS}
	}
	return cfg, nil
}

// ClockError is a TLS handshake that failed because the clock the
// certificates were verified with is outside a certificate's validity:
// on a gateway without a real-time clock, the clock is wrong (booted at
// 1970, or days behind) until it is synchronized.
type ClockError struct {
	Now     time.Time         // the time TLS verified with
	Cert    *x509.Certificate // the certificate out of its validity
	Trusted bool              // that time was trusted (synchronized, or the cloud's)
	Err     error
}

func (e *ClockError) Error() string {
	now := e.Now.UTC().Format(time.RFC3339)
	before := e.Now.Before(e.Cert.NotBefore)
	subject := ""
	if s := e.Cert.Subject.String(); s != "" {
		subject = " (" + s + ")"
	}
	switch {
	case e.Trusted && before:
		return fmt.Sprintf("the certificate%s is not valid before %s and the clock is trusted (%s): the certificate is not in force yet",
			subject, e.Cert.NotBefore.UTC().Format(time.RFC3339), now)
	case e.Trusted:
		return fmt.Sprintf("the certificate%s expired at %s (the clock is trusted: %s)", subject, e.Cert.NotAfter.UTC().Format(time.RFC3339), now)
	case before:
		return fmt.Sprintf("system clock %s is before the certificate's NotBefore %s%s; waiting for time sync", now, e.Cert.NotBefore.UTC().Format(time.RFC3339), subject)
	}
	return fmt.Sprintf("system clock %s is after the certificate's NotAfter %s%s; waiting for time sync", now, e.Cert.NotAfter.UTC().Format(time.RFC3339), subject)
}

func (e *ClockError) Unwrap() error { return e.Err }

// clockError reads a connect error: a certificate out of its validity by
// the clock TLS used becomes a ClockError; anything else nil.
func (l *Link) clockError(err error) *ClockError {
	var cie x509.CertificateInvalidError
	if !errors.As(err, &cie) || cie.Reason != x509.Expired || cie.Cert == nil {
		return nil
	}
	now := time.Now()
	if l.opts.TLS != nil && l.opts.TLS.Time != nil {
		now = l.opts.TLS.Time()
	}
	ce := &ClockError{Now: now, Cert: cie.Cert, Err: err}
	if l.opts.Clock != nil {
		ce.Trusted = l.opts.Clock.Trusted()
	}
	return ce
}
