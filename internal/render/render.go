// Package render resolves a machine's params and renders task scripts and
// templates for it.
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/template"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/secrets"
)

// Opener decrypts sealed (secure) param values.
type Opener interface {
	IsSealed(s string) bool
	Open(s string) ([]byte, error)
}

// Input is everything rendering for one machine needs.
type Input struct {
	Machine *api.Machine
	// Profiles holds the profiles the machine uses (its own, the selected
	// ones and global), by name; a missing one is skipped.
	Profiles map[string]*api.Profile
	// Selected names the profiles whose selector matches the machine's
	// labels, sorted by name. The caller finds them (see SelectProfiles).
	Selected  []string
	Params    map[string]*api.Param
	Templates map[string]*api.Template
	Secrets   Opener
	// Boot is what boot environment templates see as .Boot (an
	// *api.BootInfo); nil for task scripts.
	Boot any
}

// Value is one effective param value and where it came from.
type Value struct {
	Value  json.RawMessage `json:"value"`
	Source string          `json:"source"`
	Secure bool            `json:"secure,omitempty"`
}

// ProfileOrder is the order profiles are searched for a machine: its own
// profiles in the order listed, then the profiles its labels select
// (sorted by name, leaving out those it lists), then global.
func ProfileOrder(m *api.Machine, selected []string) []string {
	order := make([]string, 0, len(m.Profiles)+len(selected)+1)
	seen := map[string]bool{}
	add := func(names []string) {
		for _, p := range names {
			if !seen[p] {
				seen[p] = true
				order = append(order, p)
			}
		}
	}
	add(m.Profiles)
	add(selected)
	add([]string{api.GlobalProfile})
	return order
}

// Order is ProfileOrder for the input's machine and selected profiles.
func (in *Input) Order() []string { return ProfileOrder(in.Machine, in.Selected) }

// Selector is what SelectProfiles needs of a parsed label selector.
type Selector interface {
	Matches(labels map[string]string) bool
}

// SelectProfiles returns, sorted by name, the profiles whose selector
// matches the labels. Global is never selected: it applies to all.
func SelectProfiles(labels map[string]string, selectors map[string]Selector) []string {
	var out []string
	for name, sel := range selectors {
		if name != api.GlobalProfile && sel != nil && sel.Matches(labels) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// profileSource says where a value found in profile pn comes from: the
// machine's own list, or a selector matching its labels.
func (in *Input) profileSource(pn string, p *api.Profile) string {
	if pn == api.GlobalProfile || p.Selector == "" || slices.Contains(in.Machine.Profiles, pn) {
		return "profile " + pn
	}
	return "profile " + pn + " (selector " + p.Selector + ")"
}

// Lookup finds a param for the machine: machine params, then its profiles
// in order, then the profiles its labels select, then global, then the
// param's declared default.
func (in *Input) Lookup(name string) (Value, bool) {
	secure := false
	if p := in.Params[name]; p != nil {
		secure = p.Secure
	}
	if v, ok := in.Machine.Params[name]; ok {
		return Value{Value: v, Source: "machine " + in.Machine.Name, Secure: secure}, true
	}
	for _, pn := range in.Order() {
		p := in.Profiles[pn]
		if p == nil {
			continue
		}
		if v, ok := p.Params[name]; ok {
			return Value{Value: v, Source: in.profileSource(pn, p), Secure: secure}, true
		}
	}
	if p := in.Params[name]; p != nil && len(p.Default) > 0 {
		return Value{Value: p.Default, Source: "param " + name + " default", Secure: secure}, true
	}
	return Value{}, false
}

// Effective lists every param the machine can see with its winning source.
func (in *Input) Effective() map[string]Value {
	names := map[string]bool{}
	for n := range in.Machine.Params {
		names[n] = true
	}
	for _, pn := range in.Order() {
		if p := in.Profiles[pn]; p != nil {
			for n := range p.Params {
				names[n] = true
			}
		}
	}
	for n, p := range in.Params {
		if len(p.Default) > 0 {
			names[n] = true
		}
	}
	out := make(map[string]Value, len(names))
	for n := range names {
		if v, ok := in.Lookup(n); ok {
			out[n] = v
		}
	}
	return out
}

// MissingParamError names a param no source sets.
type MissingParamError struct {
	Machine  string
	Param    string
	Searched []string
}

func (e *MissingParamError) Error() string {
	return fmt.Sprintf("param %q is not set for machine %q (looked in the machine, %s, and the param's default)",
		e.Param, e.Machine, describeProfiles(e.Searched))
}

func describeProfiles(ps []string) string {
	if len(ps) == 1 {
		return "profile " + ps[0]
	}
	return "profiles " + strings.Join(ps, ", ")
}

// Param returns a param's value decoded from JSON (strings as strings,
// numbers as json.Number), decrypting secure values.
func (in *Input) Param(name string) (any, error) {
	v, ok := in.Lookup(name)
	if !ok {
		return nil, &MissingParamError{Machine: in.Machine.Name, Param: name, Searched: in.Order()}
	}
	return in.decode(name, v.Value)
}

func (in *Input) decode(name string, raw json.RawMessage) (any, error) {
	var val any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&val); err != nil {
		return nil, fmt.Errorf("param %q: bad stored value: %v", name, err)
	}
	if s, ok := val.(string); ok && secrets.IsSealed(s) {
		if in.Secrets == nil {
			// Never render the ciphertext in place of the value.
			return nil, fmt.Errorf("param %q is sealed and there is no key to open it", name)
		}
		plain, err := in.Secrets.Open(s)
		if err != nil {
			return nil, fmt.Errorf("param %q: cannot decrypt: %v", name, err)
		}
		dec := json.NewDecoder(bytes.NewReader(plain))
		dec.UseNumber()
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("param %q: bad decrypted value: %v", name, err)
		}
	}
	return val, nil
}

// data is what templates see: .Machine, .Param "name" and friends.
type data struct {
	in      *Input
	Machine *api.Machine
	Boot    any
}

func (d *data) Param(name string) (any, error) { return d.in.Param(name) }

// Render renders a template body for the machine. Named Template objects
// can be included with {{ template "name" . }}.
func Render(in *Input, name, body string) (string, error) {
	set, err := parsed(in.Templates, name, body)
	if err != nil {
		return "", err
	}
	// The set is shared: execute a clone bound to this machine's funcs.
	t, err := set.Clone()
	if err != nil {
		return "", err
	}
	t.Funcs(funcs(in))
	var out bytes.Buffer
	if err := t.Execute(&out, &data{in: in, Machine: in.Machine, Boot: in.Boot}); err != nil {
		var mp *MissingParamError
		if errors.As(err, &mp) {
			return "", mp
		}
		return "", fmt.Errorf("render %q for machine %q: %v", name, in.Machine.Name, err)
	}
	return out.String(), nil
}

func funcs(in *Input) template.FuncMap {
	return template.FuncMap{
		"param": in.Param,
		"paramOr": func(name string, def any) (any, error) {
			if _, ok := in.Lookup(name); !ok {
				return def, nil
			}
			return in.Param(name)
		},
		"hasParam": func(name string) bool { _, ok := in.Lookup(name); return ok },
		"toJSON": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"shellQuote":  shellQuote,
		"join":        Join,
		"cidrIP":      CIDRIP,
		"cidrNetmask": CIDRNetmask,
		"cidrPrefix":  CIDRPrefix,
	}
}

// Parsing every Template object for every job was a tenth of the server's
// CPU with 10,000 agents, so parsed sets are kept, keyed by a hash of
// everything parsed: the body, its name and every template's name and
// content. A changed template makes a new key; old keys age out.
const maxParsed = 256

var parseCache struct {
	mu   sync.Mutex
	sets map[[sha256.Size]byte]parsedSet
}

type parsedSet struct {
	t   *template.Template
	err error
}

// parsed returns the body (named name) parsed with the templates.
// Its funcs are placeholders: execute a clone with funcs(in).
func parsed(templates map[string]*api.Template, name, body string) (*template.Template, error) {
	names := make([]string, 0, len(templates))
	for n := range templates {
		if n != name {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		io.WriteString(h, s)
	}
	field(name)
	field(body)
	for _, n := range names {
		field(n)
		field(templates[n].Content)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])

	parseCache.mu.Lock()
	p, ok := parseCache.sets[key]
	parseCache.mu.Unlock()
	if ok {
		return p.t, p.err
	}
	p.t, p.err = parseSet(templates, names, name, body)
	parseCache.mu.Lock()
	if parseCache.sets == nil || len(parseCache.sets) >= maxParsed {
		parseCache.sets = make(map[[sha256.Size]byte]parsedSet)
	}
	parseCache.sets[key] = p
	parseCache.mu.Unlock()
	return p.t, p.err
}

func parseSet(templates map[string]*api.Template, names []string, name, body string) (*template.Template, error) {
	root := template.New(name).Option("missingkey=error").Funcs(funcs(&Input{}))
	for _, n := range names {
		if _, err := root.New(n).Parse(templates[n].Content); err != nil {
			return nil, fmt.Errorf("template %q: %v", n, err)
		}
	}
	t, err := root.New(name).Parse(body)
	if err != nil {
		return nil, fmt.Errorf("template %q: %v", name, err)
	}
	return t, nil
}

// Join joins the elements of a list with sep. Lists from params are []any,
// so any slice is accepted; elements are formatted as by fmt.Sprint.
func Join(list any, sep string) (string, error) {
	switch l := list.(type) {
	case []string:
		return strings.Join(l, sep), nil
	case []any:
		parts := make([]string, len(l))
		for i, v := range l {
			parts[i] = fmt.Sprint(v)
		}
		return strings.Join(parts, sep), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("join: %T is not a list", list)
}

// CIDRIP is the address of "10.0.0.5/24": "10.0.0.5".
func CIDRIP(v any) (string, error) {
	p, err := parseCIDR(v)
	if err != nil {
		return "", err
	}
	return p.Addr().String(), nil
}

// CIDRNetmask is the IPv4 netmask of "10.0.0.5/24": "255.255.255.0".
func CIDRNetmask(v any) (string, error) {
	p, err := parseCIDR(v)
	if err != nil {
		return "", err
	}
	if !p.Addr().Is4() {
		return "", fmt.Errorf("cidrNetmask: %s is not IPv4 (use cidrPrefix)", p)
	}
	m := net.CIDRMask(p.Bits(), 32)
	return net.IP(m).String(), nil
}

// CIDRPrefix is the prefix length of "10.0.0.5/24": 24.
func CIDRPrefix(v any) (int, error) {
	p, err := parseCIDR(v)
	if err != nil {
		return 0, err
	}
	return p.Bits(), nil
}

func parseCIDR(v any) (netip.Prefix, error) {
	s := fmt.Sprint(v)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address with a prefix length (like 10.0.0.5/24)", s)
	}
	return p, nil
}

// shellQuote quotes a value for POSIX sh.
func shellQuote(v any) string {
	s := fmt.Sprint(v)
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Check that the renderer's functions are the ones model parses with.
var _ = model.TemplateFuncs
