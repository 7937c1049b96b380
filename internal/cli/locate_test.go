package cli

import "testing"

func TestLocateDocument(t *testing.T) {
	origins := []docOrigin{{"a.yaml", 1, 1}, {"a.yaml", 2, 5}, {"b.yaml", 1, 1}, {"-", 1, 3}}
	cases := map[string]string{
		`document 3 Task "x", field script: bad`:         `b.yaml: document 1 (line 1) Task "x", field script: bad`,
		`document 2 (line 9) Param "p": wrong`:           `a.yaml: document 2 (line 5) Param "p": wrong`,
		`document 4 Task "y": same object as document 1`: `stdin: document 1 (line 3) Task "y": same object as document 1`,
		`document 9 Task "z": out of range`:              `document 9 Task "z": out of range`,
		`machine "n1" is running`:                        `machine "n1" is running`,
	}
	for in, want := range cases {
		if got := locateDocument(in, origins); got != want {
			t.Errorf("locateDocument(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}
