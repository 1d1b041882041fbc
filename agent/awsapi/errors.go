package awsapi

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is an AWS error as a REST-JSON service returns it: the status, the
// type in the x-amzn-ErrorType header, and {"message","traceId"} in the body.
type Error struct {
	Type    string
	Status  int
	Message string
	// Fields are members of the error's shape besides its message, such
	// as the iot API's resourceId and resourceArn, written into the body.
	Fields map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Type, e.Status, e.Message) }

// The error types of the iot-data API (botocore's model for iot-data, with
// their status codes).
const (
	InvalidRequest        = "InvalidRequestException"              // 400
	Unauthorized          = "UnauthorizedException"                // 401
	Forbidden             = "ForbiddenException"                   // 403
	ResourceNotFound      = "ResourceNotFoundException"            // 404
	MethodNotAllowed      = "MethodNotAllowedException"            // 405
	Conflict              = "ConflictException"                    // 409
	RequestEntityTooLarge = "RequestEntityTooLargeException"       // 413
	UnsupportedEncoding   = "UnsupportedDocumentEncodingException" // 415
	Throttling            = "ThrottlingException"                  // 429
	InternalFailure       = "InternalFailureException"             // 500
	ServiceUnavailable    = "ServiceUnavailableException"          // 503
)

var statusOf = map[string]int{
	InvalidRequest:        http.StatusBadRequest,
	Unauthorized:          http.StatusUnauthorized,
	Forbidden:             http.StatusForbidden,
	ResourceNotFound:      http.StatusNotFound,
	MethodNotAllowed:      http.StatusMethodNotAllowed,
	Conflict:              http.StatusConflict,
	RequestEntityTooLarge: http.StatusRequestEntityTooLarge,
	UnsupportedEncoding:   http.StatusUnsupportedMediaType,
	Throttling:            http.StatusTooManyRequests,
	InternalFailure:       http.StatusInternalServerError,
	ServiceUnavailable:    http.StatusServiceUnavailable,
}

var typeOf = func() map[int]string {
	m := map[int]string{}
	for t, s := range statusOf {
		m[s] = t
	}
	return m
}()

// Errorf makes an error of an AWS type; its status follows from the type.
func Errorf(typ, format string, args ...any) *Error {
	st, ok := statusOf[typ]
	if !ok {
		st = http.StatusInternalServerError
	}
	return &Error{Type: typ, Status: st, Message: fmt.Sprintf(format, args...)}
}

// ErrorForStatus is the iot-data error for an HTTP status, such as the code
// of a shadow's …/rejected message; unknown statuses are internal failures.
func ErrorForStatus(status int, message string) *Error {
	typ, ok := typeOf[status]
	if !ok {
		return &Error{Type: InternalFailure, Status: http.StatusInternalServerError, Message: message}
	}
	return &Error{Type: typ, Status: status, Message: message}
}

// AWS's messages, where the server writes them itself.
const (
	MsgMissingToken     = "Missing Authentication Token"
	MsgInvalidToken     = "The security token included in the request is invalid."
	MsgSignatureInvalid = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	MsgForbidden        = "Forbidden"
	MsgRateExceeded     = "Rate exceeded"
	MsgMethodNotAllowed = "The specified combination of HTTP verb and URI is not supported."
	MsgTooLarge         = "The payload exceeds the maximum size allowed"
	MsgInternal         = "Internal service failure"
	MsgUnavailable      = "Service Unavailable"
)

// writeError writes e as AWS does: the status, x-amzn-ErrorType with the
// type (AWS appends a colon, which the SDKs strip), the request id, and the
// JSON body.
func writeError(w http.ResponseWriter, id string, e *Error) {
	body := make(map[string]any, len(e.Fields)+2)
	for k, v := range e.Fields {
		body[k] = v
	}
	body["message"], body["traceId"] = e.Message, id
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Written with AWS's spelling; header names are case-insensitive.
	h["x-amzn-ErrorType"] = []string{e.Type + ":"}
	h["x-amzn-RequestId"] = []string{id}
	w.WriteHeader(e.Status)
	w.Write(b)
}
