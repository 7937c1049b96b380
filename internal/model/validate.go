package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/labels"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ParamTypes are the types a Param may declare.
var ParamTypes = []string{"string", "integer", "number", "boolean", "object", "array", "any"}

// MaxTaskTimeout bounds a task timeout.
const MaxTaskTimeout = 7 * 24 * time.Hour

// FieldError is a validation error about one field.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("field %s: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// TemplateFuncs are the functions task scripts and templates may call, with
// placeholder implementations for parsing; the renderer binds the real ones.
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"param":    func(string) (any, error) { return nil, nil },
		"paramOr":  func(string, any) any { return nil },
		"hasParam": func(string) bool { return false },
		"toJSON":   func(any) (string, error) { return "", nil },
		"shellQuote": func(any) string {
			return ""
		},
		"join":        func(any, string) (string, error) { return "", nil },
		"cidrIP":      func(any) (string, error) { return "", nil },
		"cidrNetmask": func(any) (string, error) { return "", nil },
		"cidrPrefix":  func(any) (int, error) { return 0, nil },
	}
}

// ParseTemplate parses a script or template body the way the renderer will.
func ParseTemplate(name, body string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Funcs(TemplateFuncs()).Parse(body)
}

// Validate checks an object users write, on its own (references to other
// objects are checked when they are used).
func Validate(obj api.Object) error {
	m := obj.GetMeta()
	if err := ValidateObjectName(m.Kind, m.Name); err != nil {
		return &FieldError{Field: "name", Err: err}
	}
	if err := ValidateLabels(m.Labels); err != nil {
		return err
	}
	switch o := obj.(type) {
	case *api.Task:
		if strings.TrimSpace(o.Script) == "" {
			return fieldErr("script", "missing script")
		}
		if _, err := ParseTemplate(o.Name, o.Script); err != nil {
			return &FieldError{Field: "script", Err: fmt.Errorf("bad template: %v", err)}
		}
		if o.Timeout != "" {
			d, err := time.ParseDuration(o.Timeout)
			if err != nil || d <= 0 || d > MaxTaskTimeout {
				return fieldErr("timeout", "%q is not a duration between 1s and %s (for example 5m)", o.Timeout, MaxTaskTimeout)
			}
		}
		if o.Retries < 0 || o.Retries > 100 {
			return fieldErr("retries", "%d is out of range 0..100", o.Retries)
		}
	case *api.Template:
		if _, err := ParseTemplate(o.Name, o.Content); err != nil {
			return &FieldError{Field: "content", Err: fmt.Errorf("bad template: %v", err)}
		}
	case *api.Workflow:
		if len(o.Tasks) == 0 {
			return fieldErr("tasks", "a workflow needs at least one task")
		}
		for i, t := range o.Tasks {
			if err := ValidateName(t); err != nil {
				return fieldErr(fmt.Sprintf("tasks[%d]", i), "%v", err)
			}
		}
	case *api.Param:
		if o.Type == "" {
			o.Type = "any"
		}
		if !contains(ParamTypes, o.Type) {
			return fieldErr("type", "unknown type %q (use one of %s)", o.Type, strings.Join(ParamTypes, ", "))
		}
		if len(o.Schema) > 0 {
			if _, err := CompileSchema(o.Name, o.Schema); err != nil {
				return &FieldError{Field: "schema", Err: err}
			}
		}
		if len(o.Default) > 0 {
			if err := CheckParamValue(o, o.Default); err != nil {
				return &FieldError{Field: "default", Err: err}
			}
		}
	case *api.Machine:
		for i, p := range o.Profiles {
			if err := ValidateName(p); err != nil {
				return fieldErr(fmt.Sprintf("profiles[%d]", i), "%v", err)
			}
		}
		if err := validateParamNames(o.Params); err != nil {
			return err
		}
		if o.BootEnv != "" {
			if err := ValidateName(o.BootEnv); err != nil {
				return fieldErr("bootEnv", "%v", err)
			}
		}
	case *api.BootEnv:
		return validateBootEnv(o)
	case *api.Profile:
		if err := validateParamNames(o.Params); err != nil {
			return err
		}
		if err := ValidateProfileSelector(o); err != nil {
			return &FieldError{Field: "selector", Err: err}
		}
	case *api.Policy:
		return validatePolicy(o)
	case *api.VersionSet:
		return validateVersionSet(o)
	case *api.Subnet:
		return validateSubnet(o)
	case *api.Reservation:
		return validateReservation(o)
	case *api.User:
		if !contains([]string{api.RoleAdmin, api.RoleOperator, api.RoleViewer}, o.Role) {
			return fieldErr("role", "unknown role %q (use admin, operator or viewer)", o.Role)
		}
		if o.PasswordHash != "" {
			return fieldErr("passwordHash", "cannot be set; give password instead")
		}
	}
	return nil
}

func validateParamNames(params map[string]json.RawMessage) error {
	for name := range params {
		if err := ValidateParamName(name); err != nil {
			return fieldErr("params."+name, "%v", err)
		}
	}
	return nil
}

// ValidateParamName checks a param name: names may hold '/' as a namespace
// separator (commission/workflow).
func ValidateParamName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("a param name must have 1 to 253 characters")
	}
	for _, part := range strings.Split(name, "/") {
		if err := ValidateName(part); err != nil {
			return fmt.Errorf("invalid param name %q", name)
		}
	}
	return nil
}

// ValidateProfileSelector checks a profile's selector: it must parse, and
// select something narrower than every machine (that is what the global
// profile is for).
func ValidateProfileSelector(p *api.Profile) error {
	if p.Selector == "" {
		return nil
	}
	if p.Name == api.GlobalProfile {
		return errors.New("the global profile applies to every machine already and cannot have a selector; put the params in another profile with this selector")
	}
	sel, err := labels.Parse(p.Selector)
	if err != nil {
		return err
	}
	if sel.Empty() {
		return errors.New("an empty selector would match every machine: leave selector out, or use the global profile")
	}
	return nil
}

// ValidateLabels checks label keys and values.
func ValidateLabels(set map[string]string) error {
	for k, v := range set {
		if err := labels.ValidateKey(k); err != nil {
			return fieldErr("labels."+k, "%v", err)
		}
		if err := labels.ValidateValue(v); err != nil {
			return fieldErr("labels."+k, "%v", err)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// noLoader refuses every external reference: a schema is checked on its
// own, and must not make the server read its files or the network.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema references %s: references to other documents are not allowed (put definitions under $defs)", url)
}

// schemaBase names a param's schema. It is not a file: with a relative URL
// the library would resolve references against the server's directory. It
// is hierarchical so that relative references resolve (and are refused).
const schemaBase = "https://drover.invalid/param/"

// CompileSchema compiles a param's JSON schema. References to anything but
// the schema itself are refused.
func CompileSchema(name string, schema json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	url := schemaBase + name
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("bad schema: %s", schemaReason(err, false))
	}
	sch, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("bad schema: %s", schemaReason(err, false))
	}
	return sch, nil
}

// schemaReason turns a jsonschema error into one line that says where and
// why. With secure set it names only the failing keywords: messages such
// as pattern's quote the value.
func schemaReason(err error, secure bool) string {
	var ve *jsonschema.ValidationError
	var se *jsonschema.SchemaValidationError
	if errors.As(err, &se) {
		if errors.As(se.Err, &ve) {
			return "it does not follow the JSON Schema specification: " + leafReasons(ve, false)
		}
		return strings.ReplaceAll(se.Err.Error(), schemaBase, "")
	}
	if errors.As(err, &ve) {
		return leafReasons(ve, secure)
	}
	return strings.ReplaceAll(err.Error(), schemaBase, "")
}

func leafReasons(ve *jsonschema.ValidationError, secure bool) string {
	var out []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := "/" + strings.Join(e.InstanceLocation, "/")
		if secure {
			out = append(out, fmt.Sprintf("at %s: fails %q", at, strings.Join(e.ErrorKind.KeywordPath(), "/")))
			return
		}
		// The library's one-error form is "at '<location>': <reason>".
		msg := strings.TrimSpace(e.Error())
		if _, reason, ok := strings.Cut(msg, "': "); ok && strings.HasPrefix(msg, "at '") {
			msg = reason
		}
		out = append(out, fmt.Sprintf("at %s: %s", at, msg))
	}
	walk(ve)
	if len(out) == 0 {
		return "the value is not valid"
	}
	return strings.Join(out, "; ")
}

// CheckParamValue checks a value against a param's type and schema. Errors
// about secure params never quote the value.
func CheckParamValue(p *api.Param, value json.RawMessage) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("param %q: value is not valid JSON", p.Name)
	}
	if !typeMatches(p.Type, v) {
		got := jsonTypeOf(v)
		if p.Type == "integer" && got == "number" {
			got = "a number with a fraction"
		}
		return fmt.Errorf("param %q wants %s, got %s", p.Name, article(p.Type), got)
	}
	if len(p.Schema) > 0 {
		sch, err := CompileSchema(p.Name, p.Schema)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
		if err != nil {
			return fmt.Errorf("param %q: value is not valid JSON", p.Name)
		}
		if err := sch.Validate(doc); err != nil {
			return fmt.Errorf("param %q: value does not match its schema: %s", p.Name, schemaReason(err, p.Secure))
		}
	}
	return nil
}

func article(t string) string {
	switch t {
	case "integer", "object", "array":
		return "an " + t
	}
	return "a " + t
}

func typeMatches(t string, v any) bool {
	switch t {
	case "", "any":
		return true
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	default:
		return jsonTypeOf(v) == t
	}
}

func jsonTypeOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
