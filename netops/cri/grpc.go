package cri

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// A unary gRPC call is an HTTP/2 POST of one length-prefixed message,
// answered by one such message and a grpc-status trailer. Over a runtime's
// unix socket it is cleartext HTTP/2 with prior knowledge, which net/http
// speaks; that is all the gRPC this package needs.

// maxMessage is grpc-go's default limit on a received message.
const maxMessage = 4 << 20

// conn is the HTTP/2 connection to one runtime socket, made on first use.
type conn struct {
	tr *http.Transport
}

func dial(path string) *conn {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &conn{tr: &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}}
}

func (c *conn) close() { c.tr.CloseIdleConnections() }

// call makes the unary call method ("/package.Service/Method") with the
// encoded request, and returns the encoded response. Its errors are
// *rpcError.
func (c *conn) call(ctx context.Context, method string, req []byte) ([]byte, error) {
	body := make([]byte, 5, 5+len(req)) // flag 0: not compressed; length
	binary.BigEndian.PutUint32(body[1:], uint32(len(req)))
	body = append(body, req...)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+method, bytes.NewReader(body))
	if err != nil {
		return nil, &rpcError{code: codeInternal, desc: err.Error()}
	}
	hr.Header = http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
		"User-Agent":   {"hairpinctl"},
	}
	if dl, ok := ctx.Deadline(); ok {
		hr.Header.Set("Grpc-Timeout", grpcTimeout(time.Until(dl)))
	}
	resp, err := c.tr.RoundTrip(hr)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	// A status in the headers is a trailers-only answer: no message.
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return nil, grpcStatus(s, resp.Header.Get("Grpc-Message"))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &rpcError{code: httpCode(resp.StatusCode), desc: fmt.Sprintf("unexpected HTTP status code received from server: %d (%s)", resp.StatusCode, http.StatusText(resp.StatusCode))}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/grpc" && !strings.HasPrefix(ct, "application/grpc+") && !strings.HasPrefix(ct, "application/grpc;") {
		return nil, &rpcError{code: codeUnknown, desc: fmt.Sprintf("unexpected content-type %q", ct)}
	}
	msg, err := readMessage(resp.Body)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	// Read to the end for the trailers.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, transportError(ctx, err)
	}
	if err := grpcStatus(resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")); err != nil {
		return nil, err
	}
	if msg == nil {
		return nil, &rpcError{code: codeInternal, desc: "the server sent no response message"}
	}
	return msg, nil
}

// readMessage reads one length-prefixed message; nil at the end of the
// stream.
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, err
	}
	if hdr[0] != 0 {
		return nil, &rpcError{code: codeInternal, desc: "compressed message without a negotiated encoding"}
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessage {
		return nil, &rpcError{code: codeResourceExhausted, desc: fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", n, maxMessage)}
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// grpcTimeout writes d as the grpc-timeout header: at most 8 digits and
// a unit.
func grpcTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	if us := d.Microseconds(); us < 1e8 {
		return strconv.FormatInt(max(us, 1), 10) + "u"
	}
	return strconv.FormatInt(min(d.Milliseconds(), 1e8-1), 10) + "m"
}

// gRPC status codes used here, and the names grpc-go gives them all.
const (
	codeOK                = 0
	codeCanceled          = 1
	codeUnknown           = 2
	codeDeadlineExceeded  = 4
	codePermissionDenied  = 7
	codeResourceExhausted = 8
	codeUnimplemented     = 12
	codeInternal          = 13
	codeUnavailable       = 14
	codeUnauthenticated   = 16
)

var codeNames = [...]string{
	"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
	"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
	"FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
	"Internal", "Unavailable", "DataLoss", "Unauthenticated",
}

// rpcError is a call's gRPC status other than OK, worded as grpc-go words
// it, so the runtime's own message reaches the user as crictl shows it. A
// call cut short by its context wraps the context's error.
type rpcError struct {
	code int
	desc string
	err  error
}

func (e *rpcError) Error() string {
	name := "Code(" + strconv.Itoa(e.code) + ")"
	if e.code >= 0 && e.code < len(codeNames) {
		name = codeNames[e.code]
	}
	return "rpc error: code = " + name + " desc = " + e.desc
}

func (e *rpcError) Unwrap() error { return e.err }

// grpcStatus is the error for a grpc-status and grpc-message pair; nil for
// OK. A missing status is an error: the server ended without one.
func grpcStatus(code, msg string) error {
	if code == "" {
		return &rpcError{code: codeInternal, desc: "server closed the stream without sending trailers"}
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		return &rpcError{code: codeInternal, desc: fmt.Sprintf("malformed grpc-status %q", code)}
	}
	if n == codeOK {
		return nil
	}
	// grpc-message is percent-encoded.
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &rpcError{code: n, desc: msg}
}

// transportError words a failed exchange: the context's end when that is
// what cut it, else the runtime is unavailable.
func transportError(ctx context.Context, err error) error {
	var re *rpcError
	if errors.As(err, &re) {
		return err
	}
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return &rpcError{code: codeDeadlineExceeded, desc: ctx.Err().Error(), err: ctx.Err()}
	case context.Canceled:
		return &rpcError{code: codeCanceled, desc: ctx.Err().Error(), err: ctx.Err()}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &rpcError{code: codeUnavailable, desc: err.Error(), err: err}
}

// httpCode is grpc-go's code for an answer that is not HTTP 200.
func httpCode(status int) int {
	switch status {
	case http.StatusBadRequest:
		return codeInternal
	case http.StatusUnauthorized:
		return codeUnauthenticated
	case http.StatusForbidden:
		return codePermissionDenied
	case http.StatusNotFound:
		return codeUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codeUnavailable
	}
	return codeUnknown
}
