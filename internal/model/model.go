// Package model maps drover's typed objects to store records: the kind
// registry, strict decoding of user documents (YAML or JSON), and the
// encoding the store keeps.
package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/store"
)

// KindInfo describes a kind.
type KindInfo struct {
	Kind    string
	Plural  string
	New     func() api.Object
	Aliases []string
	// Managed kinds are written by drover only; users cannot apply them.
	Managed bool
}

var kinds = []KindInfo{
	{Kind: api.KindMachine, Plural: "machines", New: func() api.Object { return &api.Machine{} }, Aliases: []string{"m"}},
	{Kind: api.KindProfile, Plural: "profiles", New: func() api.Object { return &api.Profile{} }},
	{Kind: api.KindParam, Plural: "params", New: func() api.Object { return &api.Param{} }},
	{Kind: api.KindTemplate, Plural: "templates", New: func() api.Object { return &api.Template{} }},
	{Kind: api.KindTask, Plural: "tasks", New: func() api.Object { return &api.Task{} }},
	{Kind: api.KindBootEnv, Plural: "bootenvs", New: func() api.Object { return &api.BootEnv{} }, Aliases: []string{"bootenv", "boot-env", "boot-envs", "be"}},
	{Kind: api.KindWorkflow, Plural: "workflows", New: func() api.Object { return &api.Workflow{} }, Aliases: []string{"wf"}},
	{Kind: api.KindRun, Plural: "runs", New: func() api.Object { return &api.Run{} }, Managed: true},
	{Kind: api.KindJob, Plural: "jobs", New: func() api.Object { return &api.Job{} }, Managed: true},
	{Kind: api.KindUser, Plural: "users", New: func() api.Object { return &api.User{} }},
	{Kind: api.KindJoinToken, Plural: "jointokens", New: func() api.Object { return &api.JoinToken{} }, Aliases: []string{"join-token", "join-tokens"}, Managed: true},
	{Kind: api.KindToken, Plural: "tokens", New: func() api.Object { return &api.Token{} }, Managed: true},
	{Kind: api.KindAudit, Plural: "audit", New: func() api.Object { return &api.Audit{} }, Managed: true},
	{Kind: api.KindRollout, Plural: "rollouts", New: func() api.Object { return &api.Rollout{} }, Aliases: []string{"ro"}, Managed: true},
	{Kind: api.KindPolicy, Plural: "policies", New: func() api.Object { return &api.Policy{} }},
	{Kind: api.KindContentPack, Plural: "contentpacks", New: func() api.Object { return &api.ContentPack{} }, Aliases: []string{"contentpack", "pack", "packs"}, Managed: true},
	{Kind: api.KindSubnet, Plural: "subnets", New: func() api.Object { return &api.Subnet{} }},
	{Kind: api.KindReservation, Plural: "reservations", New: func() api.Object { return &api.Reservation{} }},
	{Kind: api.KindLease, Plural: "leases", New: func() api.Object { return &api.Lease{} }, Managed: true},
	{Kind: api.KindSite, Plural: "sites", New: func() api.Object { return &api.Site{} }, Aliases: []string{"site"}, Managed: true},
	{Kind: api.KindVersionSet, Plural: "versionsets", New: func() api.Object { return &api.VersionSet{} }, Aliases: []string{"versionset", "version-set", "version-sets", "vs"}},
	{Kind: api.KindPackVersion, Plural: "packversions", New: func() api.Object { return &api.PackVersion{} }, Aliases: []string{"packversion", "pack-version", "pack-versions"}, Managed: true},
}

var kindByAlias = func() map[string]*KindInfo {
	m := map[string]*KindInfo{}
	for i := range kinds {
		k := &kinds[i]
		m[strings.ToLower(k.Kind)] = k
		m[k.Plural] = k
		for _, a := range k.Aliases {
			m[a] = k
		}
	}
	return m
}()

// Kinds lists every kind.
func Kinds() []KindInfo { return append([]KindInfo(nil), kinds...) }

// Lookup resolves a kind name, plural or alias, in any case.
func Lookup(name string) (*KindInfo, error) {
	if k, ok := kindByAlias[strings.ToLower(name)]; ok {
		return k, nil
	}
	names := make([]string, 0, len(kinds))
	for _, k := range kinds {
		names = append(names, k.Kind)
	}
	return nil, fmt.Errorf("unknown kind %q (known kinds: %s)", name, strings.Join(names, ", "))
}

// Encode gives the labels and stored bytes of an object. Revisions are not
// stored in the data: the store owns them, and Raw puts them back.
func Encode(obj api.Object) (map[string]string, []byte, error) {
	m := obj.GetMeta()
	rev, crev := m.Revision, m.CreateRevision
	m.Revision, m.CreateRevision = 0, 0
	data, err := json.Marshal(obj)
	m.Revision, m.CreateRevision = rev, crev
	if err != nil {
		return nil, nil, err
	}
	return m.Labels, data, nil
}

// Raw returns a record as the JSON clients see, revisions included, without
// decoding it.
func Raw(rec store.Record) []byte {
	if len(rec.Data) < 2 || rec.Data[0] != '{' {
		return rec.Data
	}
	var b bytes.Buffer
	b.Grow(len(rec.Data) + 48)
	b.WriteString(`{"revision":`)
	b.WriteString(strconv.FormatInt(rec.Revision, 10))
	b.WriteString(`,"createRevision":`)
	b.WriteString(strconv.FormatInt(rec.CreateRevision, 10))
	if len(rec.Data) > 2 {
		b.WriteByte(',')
	}
	b.Write(rec.Data[1:])
	return b.Bytes()
}

// WriteRaw writes what Raw returns without building it in memory first.
func WriteRaw(w io.Writer, rec store.Record) error {
	if len(rec.Data) < 2 || rec.Data[0] != '{' {
		_, err := w.Write(rec.Data)
		return err
	}
	var head [64]byte
	b := append(head[:0], `{"revision":`...)
	b = strconv.AppendInt(b, rec.Revision, 10)
	b = append(b, `,"createRevision":`...)
	b = strconv.AppendInt(b, rec.CreateRevision, 10)
	if len(rec.Data) > 2 {
		b = append(b, ',')
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err := w.Write(rec.Data[1:])
	return err
}

// Decode fills obj from a record.
func Decode(rec store.Record, obj api.Object) error {
	if err := json.Unmarshal(rec.Data, obj); err != nil {
		return fmt.Errorf("decode %s %q: %w", rec.Kind, rec.Name, err)
	}
	m := obj.GetMeta()
	m.Revision, m.CreateRevision = rec.Revision, rec.CreateRevision
	return nil
}

// DecodeNew decodes a record into a new object of its kind.
func DecodeNew(rec store.Record) (api.Object, error) {
	k, err := Lookup(rec.Kind)
	if err != nil {
		return nil, err
	}
	obj := k.New()
	return obj, Decode(rec, obj)
}

// Document is one user document before it is typed.
type Document struct {
	// Index is the document's position (from 1) in its file or request.
	Index int
	// Line is where it starts in its file, when known.
	Line int
	JSON []byte
	// Lines maps field paths ("script", "params.size", "tasks[0]") to
	// their lines in the file, when known.
	Lines map[string]int
}

// DocError names the document an error is about.
type DocError struct {
	Index int
	Line  int
	Kind  string
	Name  string
	Field string
	Err   error
}

func (e *DocError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", e.Index)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	if e.Kind != "" || e.Name != "" {
		fmt.Fprintf(&b, " %s %q", orUnknown(e.Kind), e.Name)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ", field %s", e.Field)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *DocError) Unwrap() error { return e.Err }

func orUnknown(s string) string {
	if s == "" {
		return "(no kind)"
	}
	return s
}

// ParseDocument decodes one document strictly into its typed object:
// unknown kinds and unknown fields are errors that name them.
func ParseDocument(doc Document) (api.Object, error) {
	var head struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	}
	derr := func(field string, err error) error {
		field, line := doc.LineOf(field)
		return &DocError{Index: doc.Index, Line: line, Kind: head.Kind, Name: head.Name, Field: field, Err: err}
	}
	switch c := firstByte(doc.JSON); c {
	case '{':
	case '[':
		return nil, derr("", errors.New("a document must be a mapping with kind and name, not a list"))
	case 0:
		return nil, derr("", errors.New("empty document"))
	default:
		return nil, derr("", errors.New("a document must be a mapping with kind and name, not a single value"))
	}
	if err := json.Unmarshal(doc.JSON, &head); err != nil {
		return nil, derr(fieldOf(err), fmt.Errorf("not a mapping with kind and name: %v", cleanJSONError(err)))
	}
	if head.Kind == "" {
		return nil, derr("kind", errors.New("missing kind"))
	}
	k, err := Lookup(head.Kind)
	if err != nil || k.Kind != head.Kind {
		if err == nil {
			err = fmt.Errorf("unknown kind %q (did you mean %q?)", head.Kind, k.Kind)
		}
		return nil, derr("kind", err)
	}
	obj := k.New()
	dec := json.NewDecoder(bytes.NewReader(doc.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, derr(fieldOf(err), cleanJSONError(err))
	}
	if err := ValidateObjectName(k.Kind, obj.GetMeta().Name); err != nil {
		return nil, derr("name", err)
	}
	return obj, nil
}

// fieldOf extracts the field a json error is about.
func fieldOf(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	msg := err.Error()
	if i := strings.Index(msg, "unknown field "); i >= 0 {
		return strings.Trim(msg[i+len("unknown field "):], `"`)
	}
	return ""
}

func cleanJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("expected %s, got JSON %s", te.Type.String(), te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return errors.New(msg)
}

// ValidateObjectName checks the name of an object of a kind: params may use
// '/' to group names (commission/workflow), other kinds may not.
func ValidateObjectName(kind, name string) error {
	if kind == api.KindParam {
		return ValidateParamName(name)
	}
	return ValidateName(name)
}

// ValidateName checks an object name: 1 to 253 characters of letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("missing name")
	}
	if len(name) > 253 {
		return fmt.Errorf("name is %d characters long (at most 253)", len(name))
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !ok && (i == 0 || i == len(name)-1 || (c != '-' && c != '_' && c != '.')) {
			return fmt.Errorf("invalid name %q: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit", name)
		}
	}
	return nil
}

// SortedKeys returns a map's keys in order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
