package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
)

// RunRequest runs a command on the machines of a node range
// (POST /api/v1/run). The answer is a stream of RunLine, one JSON object
// per line (NDJSON).
type RunRequest struct {
	// Nodes is a node range: n[1-5], @role=compute, all, east%n1 on a
	// manager.
	Nodes string `json:"nodes"`
	// Argv is the command and its arguments, executed as they are (no
	// shell: write ["sh", "-c", "a | b"] for a pipeline).
	Argv []string `json:"argv"`
	// Timeout bounds the command on each node (Go duration; default 10m).
	Timeout string `json:"timeout,omitempty"`
	// Fanout is how many nodes of a site run it at once (0: all of them).
	Fanout int `json:"fanout,omitempty"`
}

// CopyRequest pushes a file or a directory to the machines of a node range
// (POST /api/v1/cp, multipart: a part "request" with this JSON, then a part
// "archive" with a tar stream of Size bytes whose entries all sit under one
// top-level name, the copied file or directory). The answer is a stream of
// RunLine like RunRequest's.
type CopyRequest struct {
	Nodes string `json:"nodes"`
	// Dest is an absolute path on the nodes. When it is an existing
	// directory there, or ends in '/', the copy goes inside it under its
	// own name; otherwise the copy is written as Dest.
	Dest string `json:"dest"`
	// Size is the length of the archive part in bytes.
	Size    int64  `json:"size"`
	Timeout string `json:"timeout,omitempty"`
	Fanout  int    `json:"fanout,omitempty"`
}

// Types of RunLine.
const (
	RunLineStart  = "start"
	RunLineResult = "result"
	RunLineEnd    = "end"
)

// RunLine is one line of a run's answer. The stream starts with a "start"
// line per site naming its nodes, then has one "result" line per node as
// it finishes, and ends with one "end" line once every node has one. A
// stream that ends without its "end" line was cut (the server stopped or
// the request was cancelled).
type RunLine struct {
	Type string `json:"type"`
	// Site is the node's site ("" on a site endpoint itself).
	Site string `json:"site,omitempty"`
	// Node is the machine a result is for.
	Node string `json:"node,omitempty"`
	// Nodes (start) is the folded node set; Count how many it has.
	Nodes string `json:"nodes,omitempty"`
	Count int    `json:"count,omitempty"`
	// Exit is the command's exit code; absent when it did not run to its
	// end (Error says why).
	Exit   *int   `json:"exit,omitempty"`
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
	// StdoutDropped and StderrDropped count bytes cut beyond the output
	// limit (1 MiB each).
	StdoutDropped int64 `json:"stdoutDropped,omitempty"`
	StderrDropped int64 `json:"stderrDropped,omitempty"`
	// Error is set when the command did not end with an exit code:
	// ErrTimeout, ErrUnreachable, ErrAgentGone, or another message.
	Error string `json:"error,omitempty"`
	// Detail explains Error.
	Detail string `json:"detail,omitempty"`
	// Millis is how long the node took, from sending the command.
	Millis int64 `json:"ms,omitempty"`
}

// Errors of a RunLine.
const (
	// ErrTimeout: the command ran longer than its timeout and was killed.
	ErrTimeout = "timeout"
	// ErrUnreachable: the node's agent is not connected, so the command was
	// not sent.
	ErrUnreachable = "unreachable"
	// ErrAgentGone: the command was sent but no result came back.
	ErrAgentGone = "agent gone"
	// ErrFailed: the command could not be run (not found, cp failed...);
	// Detail says why.
	ErrFailed = "failed"
)

// OK reports whether a result line is a success.
func (l RunLine) OK() bool { return l.Error == "" && l.Exit != nil && *l.Exit == 0 }

// AgentCommand is an ad-hoc command handed to an agent in the answer to
// its poll.
type AgentCommand struct {
	ID   string   `json:"id"`
	Argv []string `json:"argv,omitempty"`
	// Timeout is how long the command may run (Go duration).
	Timeout string `json:"timeout"`
	// Copy, when set, makes this a copy instead of a command: fetch the
	// archive (GET /api/v1/agent/commands/ID/archive) and write it at
	// Copy.Dest.
	Copy *AgentCopy `json:"copy,omitempty"`
}

// AgentCopy is the copy part of an AgentCommand.
type AgentCopy struct {
	Dest string `json:"dest"`
	// Name is the top-level name of the archive's entries.
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// CommandResult is what an agent reports when a command ends
// (POST /api/v1/agent/commands/ID/result).
type CommandResult struct {
	Exit          *int   `json:"exit,omitempty"`
	Stdout        string `json:"stdout,omitempty"`
	Stderr        string `json:"stderr,omitempty"`
	StdoutDropped int64  `json:"stdoutDropped,omitempty"`
	StderrDropped int64  `json:"stderrDropped,omitempty"`
	Error         string `json:"error,omitempty"`
	Detail        string `json:"detail,omitempty"`
}

// MaxCommandOutput is how much of each of stdout and stderr an agent
// reports.
const MaxCommandOutput = 1 << 20

// Run sends a run request and calls fn with each line of the answer as it
// comes. It returns nil once the "end" line came, io.ErrUnexpectedEOF if
// the stream was cut before it, or fn's error.
func (c *Client) Run(ctx context.Context, req RunRequest, fn func(RunLine) error) error {
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/run", req)
	if err != nil {
		return err
	}
	return readRunStream(resp, fn)
}

// Copy sends a copy request with the archive (req.Size bytes) and calls fn
// with each line of the answer, like Run.
func (c *Client) Copy(ctx context.Context, req CopyRequest, archive io.Reader, fn func(RunLine) error) error {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeCopyBody(mw, req, archive))
	}()
	// The body is a pipe, so send cannot set it: build the request here.
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint+"/api/v1/cp", pr)
	if err != nil {
		pr.Close()
		return err
	}
	hreq.Header.Set("Content-Type", mw.FormDataContentType())
	if c.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(hreq)
	pr.Close()
	if err != nil {
		return explainTransport(c.Endpoint, err)
	}
	return readRunStream(resp, fn)
}

func writeCopyBody(mw *multipart.Writer, req CopyRequest, archive io.Reader) error {
	part, err := mw.CreateFormField("request")
	if err != nil {
		return err
	}
	if err := json.NewEncoder(part).Encode(req); err != nil {
		return err
	}
	part, err = mw.CreateFormFile("archive", "archive.tar")
	if err != nil {
		return err
	}
	n, err := io.Copy(part, io.LimitReader(archive, req.Size+1))
	if err != nil {
		return err
	}
	if n != req.Size {
		return fmt.Errorf("archive has %d bytes, not the %d announced", n, req.Size)
	}
	return mw.Close()
}

func readRunStream(resp *http.Response, fn func(RunLine) error) error {
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var line RunLine
		if err := dec.Decode(&line); err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if err := fn(line); err != nil {
			return err
		}
		if line.Type == RunLineEnd {
			return nil
		}
	}
}
