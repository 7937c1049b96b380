package model

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	`{"kind":"Machine","name":"n1","labels":{"role":"compute"},"profiles":["p1","global"],"params":{"a":1,"b":"x","c":{"d":[1,2.5e3,null,true]}}}`,
	`{"kind":"Machine","name":"n1","status":{"state":"ready","reachable":true,"lastSeen":"2024-01-02T03:04:05+00:00","inventory":{"cpus":4}}}`,
	`{"kind":"Profile","name":"global","params":{"x":"<&>"}}`,
	`{"kind":"Param","name":"commission/workflow","type":"string","default":"wf","schema":{"minLength":1}}`,
	`{"kind":"Param","name":"pw","secure":true,"schema":{"pattern":"^[0-9]+$","$ref":"#/$defs/x","$defs":{"x":{}}}}`,
	`{"kind":"Template","name":"t","content":"{{ .Machine.Name }}"}`,
	`{"kind":"Task","name":"t","script":"echo {{ .Param \"x\" }}","timeout":"5m","retries":2,"shell":"/bin/bash"}`,
	`{"kind":"Workflow","name":"w","tasks":["a","b"]}`,
	`{"kind":"Job","name":"j","machine":"n1","state":"running","exitCode":0,"queuedAt":"2024-01-02T03:04:05Z"}`,
	`{"kind":"Run","name":"r","tasks":["a"],"step":1,"startedAt":"2024-01-02T03:04:05.123456789+02:00"}`,
	`{"kind":"User","name":"u","role":"viewer","password":"12345678"}`,
	`{"kind":"JoinToken","name":"0123456789abcdef","expiresAt":"2030-01-01T00:00:00Z","machineLabels":{"a":"b"}}`,
	`{"kind":"Token","name":"0123456789abcdef","role":"admin","user":"admin","createdAt":"2024-01-01T00:00:00Z"}`,
	`{"kind":"Audit","name":"a","time":"2024-01-01T00:00:00Z","user":"u","action":"created","target":"Profile/p"}`,
	`{"kind":"Machine","name":"n1","revision":12,"createRevision":3,"description":"x"}`,
	`{"KIND":"Machine","Name":"n1","kind":"Profile"}`,
	`{"kind":"Task","name":"t","scirpt":"x"}`,
	`{"kind":"Widget","name":"w"}`,
	`[1,2]`,
	`null`,
	"kind: Machine\nname: n1\nparams:\n  a: yes\n  b: 0x1F\n---\nkind: Task\nname: t\nscript: |\n  echo hi\n",
	"base: &b {kind: Profile}\ndoc:\n  <<: *b\n  name: p\n",
	"kind: Profile\nname: p\nparams: {a: !!binary aGVsbG8=, b: 2001-12-14, c: ~}\n",
}

// FuzzParseDocument: neither splitting, parsing nor validating panics on
// any input, and a parsed document re-encodes to JSON that parses to an
// equal object (the encoding is a fixed point after one round).
func FuzzParseDocument(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		docs := []Document{{Index: 1, Line: 1, JSON: in}}
		if split, err := SplitYAML(bytes.NewReader(in)); err == nil {
			for _, d := range split {
				if !json.Valid(d.JSON) {
					t.Fatalf("SplitYAML made invalid JSON %q from %q", d.JSON, in)
				}
			}
			docs = append(docs, split...)
		} else if !strings.HasPrefix(err.Error(), "document ") {
			t.Fatalf("SplitYAML error does not name the document: %v", err)
		}
		for _, d := range docs {
			obj, err := ParseDocument(d)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "document ") {
					t.Fatalf("ParseDocument error does not name the document: %v", err)
				}
				continue
			}
			_ = Validate(obj) // must not panic; may well fail
			enc1, err := json.Marshal(obj)
			if err != nil {
				t.Fatalf("re-encoding %q: %v", d.JSON, err)
			}
			obj2, err := ParseDocument(Document{Index: 1, JSON: enc1})
			if err != nil {
				t.Fatalf("re-parsing %s (from %q): %v", enc1, d.JSON, err)
			}
			enc2, err := json.Marshal(obj2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc1, enc2) {
				t.Fatalf("round trip changed the object:\n%s\n%s", enc1, enc2)
			}
			obj3, err := ParseDocument(Document{Index: 1, JSON: enc2})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(obj2, obj3) {
				t.Fatalf("re-parsed objects differ:\n%#v\n%#v", obj2, obj3)
			}
			if reflect.TypeOf(obj) != reflect.TypeOf(obj2) || obj.GetMeta().Name != obj2.GetMeta().Name || obj.GetMeta().Kind != obj2.GetMeta().Kind {
				t.Fatalf("round trip changed kind or name: %#v -> %#v", obj.GetMeta(), obj2.GetMeta())
			}
		}
	})
}
