package render

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
	"github.com/drover-project/drover/internal/secrets"
)

func newBox(t *testing.T) *secrets.Box {
	t.Helper()
	key := make([]byte, secrets.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	box, err := secrets.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func sealed(t *testing.T, box *secrets.Box, v string) json.RawMessage {
	t.Helper()
	s, err := box.Seal([]byte(v))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	return b
}

func input(t *testing.T, box *secrets.Box) *Input {
	return &Input{
		Machine: &api.Machine{
			Meta:     api.Meta{Kind: api.KindMachine, Name: "n1", Labels: map[string]string{"role": "compute"}},
			Profiles: []string{"p1", "p2", "p1"},
			Params:   map[string]json.RawMessage{"m": raw(`"machine"`), "shared": raw(`"machine"`)},
		},
		Profiles: map[string]*api.Profile{
			"p1":     {Meta: api.Meta{Name: "p1"}, Params: map[string]json.RawMessage{"shared": raw(`"p1"`), "p": raw(`"p1"`), "n": raw(`42`)}},
			"p2":     {Meta: api.Meta{Name: "p2"}, Params: map[string]json.RawMessage{"p": raw(`"p2"`), "q": raw(`"p2"`), "pw": sealed(t, box, `"hunter2 'quoted'"`), "obj": sealed(t, box, `{"user":"root","port":623}`)}},
			"global": {Meta: api.Meta{Name: "global"}, Params: map[string]json.RawMessage{"q": raw(`"global"`), "g": raw(`"global"`), "list": raw(`["a","b"]`)}},
		},
		Params: map[string]*api.Param{
			"g":   {Meta: api.Meta{Name: "g"}, Default: raw(`"default"`)},
			"d":   {Meta: api.Meta{Name: "d"}, Default: raw(`"default"`)},
			"pw":  {Meta: api.Meta{Name: "pw"}, Secure: true},
			"obj": {Meta: api.Meta{Name: "obj"}, Secure: true},
		},
		Templates: map[string]*api.Template{
			"header": {Meta: api.Meta{Name: "header"}, Content: `# {{ .Machine.Name }} ({{ .Param "p" }})`},
			"nested": {Meta: api.Meta{Name: "nested"}, Content: `[{{ template "header" . }}]`},
		},
		Secrets: box,
	}
}

func TestLookupOrder(t *testing.T) {
	in := input(t, newBox(t))
	cases := []struct{ name, value, source string }{
		{"m", `"machine"`, "machine n1"},
		{"shared", `"machine"`, "machine n1"},
		{"p", `"p1"`, "profile p1"},
		{"q", `"p2"`, "profile p2"},
		{"g", `"global"`, "profile global"},
		{"d", `"default"`, "param d default"},
	}
	for _, c := range cases {
		v, ok := in.Lookup(c.name)
		if !ok || string(v.Value) != c.value || v.Source != c.source {
			t.Errorf("Lookup(%s) = %s from %q (%v), want %s from %q", c.name, v.Value, v.Source, ok, c.value, c.source)
		}
	}
	if _, ok := in.Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
	if got := ProfileOrder(in.Machine, nil); strings.Join(got, ",") != "p1,p2,global" {
		t.Errorf("ProfileOrder = %v", got)
	}
	// A machine that lists global itself searches it where listed.
	m := &api.Machine{Profiles: []string{"global", "p1"}}
	if got := ProfileOrder(m, nil); strings.Join(got, ",") != "global,p1" {
		t.Errorf("ProfileOrder with global listed = %v", got)
	}
	eff := in.Effective()
	if len(eff) != 10 {
		t.Errorf("Effective has %d params: %v", len(eff), eff)
	}
	if !eff["pw"].Secure || eff["pw"].Source != "profile p2" || eff["m"].Secure {
		t.Errorf("Effective pw = %+v, m = %+v", eff["pw"], eff["m"])
	}
}

// Profiles selected by label come after the machine's own profiles and
// before global, sorted by name; one the machine lists stays where listed.
func TestSelectedProfilesLookupOrder(t *testing.T) {
	in := input(t, newBox(t))
	sel := func(s string) Selector {
		ls, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	selectors := map[string]Selector{
		"zz-compute": sel("role=compute"),
		"aa-compute": sel("role in (compute,storage)"),
		"p2":         sel("role=compute"), // listed by the machine already
		"storage":    sel("role=storage"),
		"global":     sel("role=compute"), // never selected
	}
	in.Selected = SelectProfiles(in.Machine.Labels, selectors)
	if got := strings.Join(in.Selected, ","); got != "aa-compute,p2,zz-compute" {
		t.Fatalf("SelectProfiles = %s", got)
	}
	in.Profiles["aa-compute"] = &api.Profile{Meta: api.Meta{Name: "aa-compute"}, Selector: "role in (compute,storage)", Params: map[string]json.RawMessage{"g": raw(`"aa"`), "q": raw(`"aa"`), "s": raw(`"aa"`)}}
	in.Profiles["zz-compute"] = &api.Profile{Meta: api.Meta{Name: "zz-compute"}, Selector: "role=compute", Params: map[string]json.RawMessage{"s": raw(`"zz"`), "z": raw(`"zz"`)}}
	in.Profiles["p2"].Selector = "role=compute"
	if got := strings.Join(in.Order(), ","); got != "p1,p2,aa-compute,zz-compute,global" {
		t.Errorf("Order = %s", got)
	}
	cases := []struct{ name, value, source string }{
		{"m", `"machine"`, "machine n1"},
		{"q", `"p2"`, "profile p2"}, // listed: no selector in the source
		{"g", `"aa"`, "profile aa-compute (selector role in (compute,storage))"},
		{"s", `"aa"`, "profile aa-compute (selector role in (compute,storage))"},
		{"z", `"zz"`, "profile zz-compute (selector role=compute)"},
		{"list", `["a","b"]`, "profile global"},
		{"d", `"default"`, "param d default"},
	}
	for _, c := range cases {
		v, ok := in.Lookup(c.name)
		if !ok || string(v.Value) != c.value || v.Source != c.source {
			t.Errorf("Lookup(%s) = %s from %q (%v), want %s from %q", c.name, v.Value, v.Source, ok, c.value, c.source)
		}
	}
	// A label change is a new selection.
	in.Machine.Labels = map[string]string{"role": "storage"}
	in.Selected = SelectProfiles(in.Machine.Labels, selectors)
	if got := strings.Join(in.Selected, ","); got != "aa-compute,storage" {
		t.Fatalf("SelectProfiles after relabel = %s", got)
	}
	if v, _ := in.Lookup("z"); v.Value != nil {
		t.Errorf("z still found after relabel: %+v", v)
	}
	_, err := in.Param("nope")
	if err == nil || !strings.Contains(err.Error(), "profiles p1, p2, aa-compute, storage, global") {
		t.Errorf("missing param error does not list the searched profiles: %v", err)
	}
}

func TestRender(t *testing.T) {
	in := input(t, newBox(t))
	cases := []struct{ name, body, want string }{
		{"param", `{{ .Param "p" }}-{{ param "q" }}-{{ .Param "d" }}`, "p1-p2-default"},
		{"number", `{{ .Param "n" }}`, "42"},
		{"list", `{{ join (param "list") "," }}`, "a,b"},
		{"range over a list", `{{ range param "list" }}<{{ . }}>{{ end }}`, "<a><b>"},
		{"machine", `{{ .Machine.Name }} {{ index .Machine.Labels "role" }}`, "n1 compute"},
		{"secure value decrypted", `{{ .Param "pw" }}`, "hunter2 'quoted'"},
		{"secure object decrypted", `{{ (.Param "obj").user }}:{{ (.Param "obj").port }}`, "root:623"},
		{"shellQuote", `{{ shellQuote (.Param "pw") }}`, `'hunter2 '\''quoted'\'''`},
		{"toJSON", `{{ toJSON (.Param "obj") }}`, `{"port":623,"user":"root"}`},
		{"hasParam and paramOr", `{{ hasParam "p" }} {{ hasParam "zz" }} {{ paramOr "zz" "fallback" }} {{ paramOr "p" "fallback" }}`, "true false fallback p1"},
		{"template include", `{{ template "header" . }}`, "# n1 (p1)"},
		{"nested template include", `{{ template "nested" . }}!`, "[# n1 (p1)]!"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render(in, "task t", c.body)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestRenderMissingParam(t *testing.T) {
	in := input(t, newBox(t))
	for _, body := range []string{
		`before {{ .Param "ntp/server" }} after`,
		`{{ param "ntp/server" }}`,
		`{{ template "uses-missing" . }}`,
	} {
		in.Templates["uses-missing"] = &api.Template{Meta: api.Meta{Name: "uses-missing"}, Content: `{{ .Param "ntp/server" }}`}
		out, err := Render(in, "task t", body)
		var mp *MissingParamError
		if !errors.As(err, &mp) {
			t.Fatalf("%s: got %q, %v; want a MissingParamError", body, out, err)
		}
		if mp.Param != "ntp/server" || mp.Machine != "n1" {
			t.Errorf("%s: %+v", body, mp)
		}
		msg := err.Error()
		for _, w := range []string{`"ntp/server"`, `"n1"`, "machine", "p1", "p2", "global", "default"} {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: message %q does not name %q", body, msg, w)
			}
		}
		if strings.Index(msg, "p1") > strings.Index(msg, "p2") || strings.Index(msg, "p2") > strings.Index(msg, "global") {
			t.Errorf("message %q does not list the places in search order", msg)
		}
	}
	// A machine without profiles: the message still says where it looked.
	in.Machine.Profiles = nil
	_, err := Render(in, "task t", `{{ .Param "zz" }}`)
	if err == nil || !strings.Contains(err.Error(), "profile global") {
		t.Errorf("no profiles: %v", err)
	}
}

func TestRenderErrors(t *testing.T) {
	in := input(t, newBox(t))
	if _, err := Render(in, "task t", `{{ template "nope" . }}`); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown template: %v", err)
	}
	if _, err := Render(in, "task t", `{{ .Param "p" `); err == nil || !strings.Contains(err.Error(), "task t") {
		t.Errorf("bad syntax: %v", err)
	}
	in.Templates["broken"] = &api.Template{Meta: api.Meta{Name: "broken"}, Content: `{{ end }}`}
	if _, err := Render(in, "task t", `ok`); err == nil || !strings.Contains(err.Error(), `"broken"`) {
		t.Errorf("broken stored template: %v", err)
	}
	delete(in.Templates, "broken")

	// A sealed value with another key fails, naming the param, without
	// rendering the ciphertext.
	in.Profiles["p2"].Params["pw"] = sealed(t, newBox(t), `"x"`)
	out, err := Render(in, "task t", `{{ .Param "pw" }}`)
	if err == nil || !strings.Contains(err.Error(), `"pw"`) || strings.Contains(out, "enc:") {
		t.Errorf("foreign sealed value: %q, %v", out, err)
	}
	// So does a sealed value with no key to open it.
	in.Secrets = nil
	in.Profiles["p2"].Params["pw"] = sealed(t, newBox(t), `"x"`)
	out, err = Render(in, "task t", `{{ .Param "pw" }}`)
	if err == nil || !strings.Contains(err.Error(), `"pw"`) || strings.Contains(out, "enc:") {
		t.Errorf("sealed value without a key: %q, %v", out, err)
	}
}

func TestRenderTemplateRecursionEnds(t *testing.T) {
	in := input(t, newBox(t))
	in.Templates["loop"] = &api.Template{Meta: api.Meta{Name: "loop"}, Content: `{{ template "loop" . }}`}
	if _, err := Render(in, "task t", `{{ template "loop" . }}`); err == nil {
		t.Error("a template including itself rendered")
	}
}

// Parsed templates are cached: a changed Template object must be seen at
// once, and machines rendering the same body at the same time must each see
// their own params (the funcs are bound per render).
func TestRenderCacheSeesChangesAndBindsPerMachine(t *testing.T) {
	box := newBox(t)
	in := input(t, box)
	body := `{{ template "header" . }} {{ param "m" }}`
	if got, err := Render(in, "task t", body); err != nil || got != "# n1 (p1) machine" {
		t.Fatalf("first render: %q, %v", got, err)
	}
	in.Templates["header"] = &api.Template{Meta: api.Meta{Name: "header"}, Content: `## {{ .Machine.Name }}`}
	if got, err := Render(in, "task t", body); err != nil || got != "## n1 machine" {
		t.Fatalf("after the template changed: %q, %v", got, err)
	}
	in.Templates["header"] = &api.Template{Meta: api.Meta{Name: "header"}, Content: `{{ if }}`}
	if _, err := Render(in, "task t", body); err == nil || !strings.Contains(err.Error(), `template "header"`) {
		t.Fatalf("a broken template must fail the render, naming it: %v", err)
	}

	in = input(t, box)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		m := *in.Machine
		m.Name = fmt.Sprintf("n%d", i)
		m.Params = map[string]json.RawMessage{"m": raw(fmt.Sprintf("%q", m.Name))}
		mine := *in
		mine.Machine = &m
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := Render(&mine, "task t", body)
			if want := fmt.Sprintf("# %s (p1) %s", m.Name, m.Name); err != nil || got != want {
				errs <- fmt.Errorf("got %q, %v; want %q", got, err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
