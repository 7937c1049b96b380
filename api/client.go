package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Client talks to a drover endpoint.
type Client struct {
	Endpoint string
	Token    string
	HTTP     *http.Client
}

// NewClient makes a client for endpoint trusting the CA in caPEM (or the
// system roots when caPEM is empty).
func NewClient(endpoint string, caPEM []byte, token string) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("endpoint %q: give a URL such as https://127.0.0.1:8443", endpoint)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 15 * time.Second,
		ForceAttemptHTTP2:   true,
		Proxy:               http.ProxyFromEnvironment,
		// A list of 10,000 machines is several MB: with windows this big
		// the server sends it without waiting for window updates, each a
		// round trip through a busy server's scheduler.
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     32 << 20,
			MaxReceiveBufferPerConnection: 64 << 20,
		},
	}
	return &Client{Endpoint: strings.TrimRight(endpoint, "/"), Token: token, HTTP: &http.Client{Transport: tr}}, nil
}

// NewClientFromFile reads the CA from a file.
func NewClientFromFile(endpoint, caFile, token string) (*Client, error) {
	var ca []byte
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
		ca = b
	}
	return NewClient(endpoint, ca, token)
}

// UseHTTP1 makes the client speak HTTP/1.1, before its first request. A
// command-line client sends one request at a time and gains nothing from
// HTTP/2's multiplexing, while a big answer (a list of thousands of
// machines) comes faster over HTTP/1.1: the server's handler writes to the
// connection itself instead of handing every write to the connection's
// goroutine. Agents keep HTTP/2: their long poll, heartbeats and logs
// share one connection.
func (c *Client) UseHTTP1() {
	tr, ok := c.HTTP.Transport.(*http.Transport)
	if !ok {
		return
	}
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
}

// WithToken returns a copy of the client using another token.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.Token = token
	return &cc
}

// Do sends a request with a JSON body (when in is non-nil) and decodes a
// JSON answer into out (when non-nil). Errors from the server come back as
// *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		switch v := in.(type) {
		case []byte:
			body = bytes.NewReader(v)
		default:
			b, err := json.Marshal(in)
			if err != nil {
				return nil, err
			}
			body = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		if _, raw := in.([]byte); raw {
			req.Header.Set("Content-Type", "application/octet-stream")
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, explainTransport(c.Endpoint, err)
	}
	return resp, nil
}

func explainTransport(endpoint string, err error) error {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return fmt.Errorf("%s: the server's certificate is not signed by a trusted CA (pass --ca-cert or set DROVER_CA_CERT to the server's ca.crt): %w", endpoint, err)
	}
	return fmt.Errorf("%s: %w", endpoint, err)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e Error
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		e.Status = resp.StatusCode
		return &e
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: msg}
}

// IsStatus reports whether err is an API error with that HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Login exchanges a username and password for a token.
func (c *Client) Login(ctx context.Context, username, password, ttl string) (*LoginResponse, error) {
	var out LoginResponse
	err := c.Do(ctx, http.MethodPost, "/api/v1/login", LoginRequest{Username: username, Password: password, TTL: ttl}, &out)
	return &out, err
}

// List lists objects of a kind, optionally by label selector.
func (c *Client) List(ctx context.Context, kind, selector string) (*List, error) {
	return c.ListView(ctx, kind, selector, "")
}

// ListView lists objects of kind in a view (ViewFull or ViewSummary; empty
// is full).
func (c *Client) ListView(ctx context.Context, kind, selector, view string) (*List, error) {
	q := url.Values{}
	if selector != "" {
		q.Set("selector", selector)
	}
	if view != "" {
		q.Set("view", view)
	}
	path := "/api/v1/objects/" + url.PathEscape(kind)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out List
	err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return &out, err
}

// Get reads one object into out.
func (c *Client) Get(ctx context.Context, kind, name string, out any) error {
	return c.Do(ctx, http.MethodGet, "/api/v1/objects/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, out)
}

// Delete deletes an object.
func (c *Client) Delete(ctx context.Context, kind, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/v1/objects/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, nil)
}

// Apply creates or updates documents, all or nothing.
func (c *Client) Apply(ctx context.Context, docs []json.RawMessage) (*ApplyResponse, error) {
	var out ApplyResponse
	err := c.Do(ctx, http.MethodPost, "/api/v1/apply", ApplyRequest{Documents: docs}, &out)
	return &out, err
}

// ApplyObjects applies typed objects.
func (c *Client) ApplyObjects(ctx context.Context, objs ...Object) (*ApplyResponse, error) {
	docs := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
	return c.Apply(ctx, docs)
}

// Action starts a lifecycle action on the machines of a node range. The
// response lists per-machine outcomes; err is set only when nothing started.
func (c *Client) Action(ctx context.Context, action, nodes, workflow string) (*ActionResponse, error) {
	var out ActionResponse
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/actions/"+url.PathEscape(action), ActionRequest{Nodes: nodes, Workflow: workflow})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if json.Unmarshal(b, &out) == nil && out.Action != "" {
		if resp.StatusCode >= 300 {
			return &out, &Error{Status: resp.StatusCode, Code: "refused", Message: fmt.Sprintf("%s refused on every machine", action)}
		}
		return &out, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return nil, decodeError(resp)
}

// CreateJoinToken makes a join token for agents.
func (c *Client) CreateJoinToken(ctx context.Context, ttl string, machineLabels map[string]string) (*JoinTokenResponse, error) {
	var out JoinTokenResponse
	err := c.Do(ctx, http.MethodPost, "/api/v1/join-tokens", JoinTokenRequest{TTL: ttl, MachineLabels: machineLabels}, &out)
	return &out, err
}

// JobLog copies a job's log from offset to w; with follow it streams until
// the job ends. It returns the new offset.
func (c *Client) JobLog(ctx context.Context, job string, offset int64, follow bool, w io.Writer) (int64, error) {
	path := fmt.Sprintf("/api/v1/jobs/%s/log?offset=%d", url.PathEscape(job), offset)
	if follow {
		path += "&follow=1"
	}
	body, err := c.Stream(ctx, path)
	if err != nil {
		return offset, err
	}
	defer body.Close()
	n, err := io.Copy(w, body)
	return offset + n, err
}

// Stream GETs path and returns the body for the caller to read and close;
// an answer other than 2xx comes back as *Error.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// Event is one change from the event stream.
type Event struct {
	Type     string          `json:"type"`
	Revision int64           `json:"revision"`
	Kind     string          `json:"kind"`
	Name     string          `json:"name"`
	Object   json.RawMessage `json:"object,omitempty"`
}

// ErrResume ends a watch that the server cut (slow client, restart):
// watch again from the last revision seen.
var ErrResume = errors.New("event stream ended; resume from the last revision")

// FromNow makes Watch start at the store's current revision.
const FromNow = -1

// Watch streams events after revision from (FromNow: from the current
// revision; 0: all retained history) of the given kinds (none: all) to fn
// until ctx ends, fn returns an error, or the stream ends. It returns the
// last revision seen.
func (c *Client) Watch(ctx context.Context, from int64, kinds []string, fn func(Event) error) (int64, error) {
	path := "/api/v1/events"
	q := url.Values{}
	if from >= 0 {
		q.Set("from", strconv.FormatInt(from, 10))
	}
	if len(kinds) > 0 {
		q.Set("kinds", strings.Join(kinds, ","))
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	body, err := c.Stream(ctx, path)
	if err != nil {
		return from, err
	}
	defer body.Close()
	last := from
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var evType, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				if evType == "error" {
					return last, ErrResume
				}
				var ev Event
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					return last, fmt.Errorf("bad event: %w", err)
				}
				last = ev.Revision
				if err := fn(ev); err != nil {
					return last, err
				}
			}
			evType, data = "", ""
		case strings.HasPrefix(line, "event: "):
			evType = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	if ctx.Err() != nil {
		return last, ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return last, err
	}
	return last, ErrResume
}
