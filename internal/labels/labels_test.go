package labels

import (
	"errors"
	"strings"
	"testing"

	"github.com/drover-project/drover/internal/store"
)

var _ store.Selector = Selector{}

func TestParseCanonical(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"   ", ""},
		{"role=compute", "role=compute"},
		{"role==compute", "role=compute"},
		{" role = compute ", "role=compute"},
		{"env!=prod", "env!=prod"},
		{"gpu", "gpu"},
		{"!gpu", "!gpu"},
		{"! gpu", "!gpu"},
		{"role=", "role="},
		{"role!=", "role!="},
		{"tier in (b,a)", "tier in (a,b)"},
		{"tier in(a, b ,a)", "tier in (a,b)"},
		{"tier notin (x)", "tier notin (x)"},
		{"b=1,a=2", "a=2,b=1"},
		{"a=1,a=1", "a=1"},
		{"a!=1,a,!a,a in (1),a=1,a notin (1)", "a,!a,a=1,a!=1,a in (1),a notin (1)"},
		{"drover.io/rack=r1", "drover.io/rack=r1"},
		{"in", "in"},
		{"in in (in)", "in in (in)"},
		{"notin notin (x)", "notin notin (x)"},
		{"a=b,\tc\n", "a=b,c"},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in string
		// column (1-based) and a fragment the message must contain
		col  int
		frag string
	}{
		{"=x", 1, `expected a label key, found "="`},
		{"a=b c", 5, `unexpected "c" after requirement`},
		{"a,", 3, "expected a label key, found end of selector"},
		{",a", 1, `expected a label key, found ","`},
		{"a b", 3, `unexpected "b" after key "a"`},
		{"a in a", 6, `expected "(" after "in"`},
		{"a in ()", 7, `expected a value in the "in" set, found ")"`},
		{"a in (x,)", 9, `expected a value in the "in" set`},
		{"a in (x", 8, `unexpected end of selector in the "in" set`},
		{"a in (x y)", 9, `unexpected "y" in the "in" set`},
		{"a=b=c", 4, `unexpected "=" after requirement`},
		{"a=-b", 3, `value "-b" must start and end`},
		{"-a=b", 1, `name "-a" must start and end`},
		{"a$=b", 2, `unexpected "$" after key "a"`},
		{"a=é", 3, `unexpected "é" after requirement`},
		{"Example.com/a=b", 1, `prefix "Example.com" contains 'E'`},
		{"/a", 1, `prefix "" is empty`},
		{"a/", 1, "name part is empty"},
		{"a/b/c", 1, `name "b/c" contains '/'`},
		{"!", 2, "expected a label key, found end of selector"},
		{"!a=b", 3, `unexpected "=" after requirement`},
		{"a=" + strings.Repeat("v", 64), 3, "64 characters long, the limit is 63"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error", tt.in)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) error %T is not *SyntaxError", tt.in, err)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error does not wrap ErrInvalid", tt.in)
		}
		if se.Offset+1 != tt.col {
			t.Errorf("Parse(%q): column %d, want %d (%v)", tt.in, se.Offset+1, tt.col, err)
		}
		if !strings.Contains(err.Error(), tt.frag) {
			t.Errorf("Parse(%q) = %q, want it to contain %q", tt.in, err, tt.frag)
		}
	}
}

func TestMatches(t *testing.T) {
	set := map[string]string{"role": "compute", "env": "prod", "empty": "", "drover.io/rack": "r1"}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"role=compute", true},
		{"role=storage", false},
		{"role!=storage", true},
		{"role!=compute", false},
		{"missing!=x", true}, // absent keys satisfy !=
		{"missing=x", false},
		{"role", true},
		{"missing", false},
		{"!missing", true},
		{"!role", false},
		{"empty", true},
		{"empty=", true},
		{"empty!=", false},
		{"missing=", false}, // "=" with empty value still needs the key
		{"role in (storage,compute)", true},
		{"role in (storage)", false},
		{"missing in (x)", false},
		{"role notin (storage)", true},
		{"role notin (compute,storage)", false},
		{"missing notin (x)", true},
		{"role=compute,env=prod", true},
		{"role=compute,env=dev", false},
		{"drover.io/rack in (r1,r2),!gpu", true},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.sel)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.sel, err)
		}
		if got := sel.Matches(set); got != tt.want {
			t.Errorf("%q.Matches(%v) = %v, want %v", tt.sel, set, got, tt.want)
		}
	}
	if !(Selector{}).Matches(nil) || !Everything().Matches(set) || !Everything().Empty() {
		t.Error("zero Selector must match everything")
	}
	if sel, _ := Parse("a"); sel.Empty() {
		t.Error("Parse(\"a\").Empty() = true")
	}
	if sel, _ := Parse("!a"); !sel.Matches(nil) {
		t.Error("!a must match a nil label set")
	}
}

func TestEqualAndRequirements(t *testing.T) {
	a, _ := Parse("x in (2,1),y")
	b, _ := Parse("y, x in (1,2,1)")
	c, _ := Parse("y, x in (1,3)")
	if !a.Equal(b) {
		t.Errorf("%v and %v should be equal", a, b)
	}
	if a.Equal(c) {
		t.Errorf("%v and %v should differ", a, c)
	}
	reqs := a.Requirements()
	reqs[0].Values[0] = "mutated"
	if !a.Equal(b) {
		t.Error("mutating Requirements() changed the selector")
	}
}

func TestValidateKey(t *testing.T) {
	good := []string{"a", "role", "A1", "a.b_c-d", "drover.io/rack", "a-b.c/d", strings.Repeat("k", 63),
		strings.Repeat("p", 63) + "." + strings.Repeat("q", 63) + "/k"}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q): %v", k, err)
		}
	}
	bad := []string{"", "-a", "a-", ".a", "a b", "a/", "/a", "A.io/a", "a..b/c", "-a.io/b", "a.io-/b",
		strings.Repeat("k", 64), strings.Repeat("p", 64) + "/k", "a/b/c", "é"}
	for _, k := range bad {
		err := ValidateKey(k)
		if err == nil {
			t.Errorf("ValidateKey(%q) succeeded, want error", k)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateKey(%q) = %v, does not wrap ErrInvalid", k, err)
		}
	}
	long := strings.Repeat(strings.Repeat("p", 50)+".", 5) + "io/k" // 259-char prefix
	if err := ValidateKey(long); err == nil || !strings.Contains(err.Error(), "the limit is 253") {
		t.Errorf("ValidateKey(long prefix) = %v, want the 253 limit", err)
	}
}

func TestValidateValue(t *testing.T) {
	for _, v := range []string{"", "a", "1", "a.b-c_d", strings.Repeat("v", 63)} {
		if err := ValidateValue(v); err != nil {
			t.Errorf("ValidateValue(%q): %v", v, err)
		}
	}
	for _, v := range []string{"-", "a-", "_a", "a/b", "a b", strings.Repeat("v", 64)} {
		if err := ValidateValue(v); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateValue(%q) = %v, want ErrInvalid", v, err)
		}
	}
}

func TestValidateSet(t *testing.T) {
	if err := ValidateSet(map[string]string{"role": "compute", "drover.io/x": ""}); err != nil {
		t.Errorf("ValidateSet(good): %v", err)
	}
	err := ValidateSet(map[string]string{"b": "ok", "a": "bad value"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `label "a"`) {
		t.Errorf("ValidateSet(bad value) = %v", err)
	}
	if err := ValidateSet(map[string]string{"-k": "v"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ValidateSet(bad key) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "role=compute", "a==b,c!=d", "!x,y", "t in (a,b)", "t notin (a)",
		"drover.io/rack=r1", "a in (", "a=,b=", "in in (in)", "a=b=c", "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(in) {
				t.Fatalf("Parse(%q): bad error %v", in, err)
			}
			return
		}
		canon := sel.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", in, canon, err)
		}
		if !again.Equal(sel) {
			t.Fatalf("Parse(%q) = %q, re-parsed as %q", in, canon, again)
		}
		if again.String() != canon {
			t.Fatalf("String not stable: %q then %q", canon, again.String())
		}
		for _, r := range sel.reqs {
			if err := ValidateKey(r.Key); err != nil {
				t.Fatalf("Parse(%q) accepted invalid key: %v", in, err)
			}
			for _, v := range r.Values {
				if err := ValidateValue(v); err != nil {
					t.Fatalf("Parse(%q) accepted invalid value: %v", in, err)
				}
			}
		}
	})
}
