package mirror

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
)

func obj(name string, rev int64) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"kind":"Machine","name":%q,"revision":%d}`, name, rev))
}

func all(kind string) bool { return kind == "Machine" }

func names(t *testing.T, d *db) map[string]int64 {
	t.Helper()
	objs, err := d.list("Machine")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, o := range objs {
		out[o.Name] = o.Revision
	}
	return out
}

// Events are applied by revision: an event older than what the mirror
// holds of its object changes nothing, so a burst seen twice (a resume
// from a cursor inside it) leaves the mirror as it was.
func TestApplyBatchIdempotent(t *testing.T) {
	d, err := openDB(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	burst := []event{
		{Type: "put", Revision: 5, Kind: "Machine", Name: "n1", Object: obj("n1", 5)},
		{Type: "put", Revision: 5, Kind: "User", Name: "admin", Object: json.RawMessage(`{}`)},
		{Type: "put", Revision: 6, Kind: "Machine", Name: "n2", Object: obj("n2", 6)},
		{Type: "put", Revision: 7, Kind: "Machine", Name: "n1", Object: obj("n1", 7)},
		{Type: "delete", Revision: 8, Kind: "Machine", Name: "n2"},
	}
	delta, err := d.applyBatch(burst, all, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, d); delta != 1 || len(got) != 1 || got["n1"] != 7 {
		t.Fatalf("after the burst: delta %d, %v", delta, got)
	}
	// The tail of the burst again (resume from cursor 7 replays 8), then
	// older events out of order: nothing changes, the cursor stays.
	delta, err = d.applyBatch([]event{burst[4], burst[0], {Type: "delete", Revision: 6, Kind: "Machine", Name: "n1"}}, all, 6)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := d.readMeta()
	if got := names(t, d); delta != 0 || len(got) != 1 || got["n1"] != 7 || m.cursor != 7 || m.objects != 1 {
		t.Fatalf("after the replay: delta %d, %v, meta %+v", delta, got, m)
	}
	o, found, err := d.get("Machine", "n1")
	if err != nil || !found || string(o.JSON) != string(obj("n1", 7)) {
		t.Fatalf("get: %s %v %v", o.JSON, found, err)
	}
	if _, found, _ := d.get("User", "admin"); found {
		t.Fatal("a kind that is not mirrored was stored")
	}
	// A re-list replaces everything and counts.
	n, err := d.replace([]listed{{kind: "Machine", items: []listedItem{{name: "n9", revision: 3, data: obj("n9", 3)}}}}, 3)
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	m, _ = d.readMeta()
	if got := names(t, d); len(got) != 1 || got["n9"] != 3 || m.cursor != 3 || !m.listed || m.relists != 1 {
		t.Fatalf("after replace: %v %+v", got, m)
	}
}

func TestReaderCompleteness(t *testing.T) {
	r := &reader{complete: 10, pending: 10}
	r.add(event{Revision: 11})
	r.add(event{Revision: 11})
	if r.complete != 10 {
		t.Fatalf("revision 11 may not be complete yet: %d", r.complete)
	}
	r.comment([]byte(": ping 11"))
	if r.complete != 10 || r.siteRev != 11 {
		t.Fatalf("a ping proves nothing about completeness: %+v", r)
	}
	r.comment([]byte(": rev 11"))
	if r.complete != 11 {
		t.Fatalf(": rev 11: %d", r.complete)
	}
	r.add(event{Revision: 12})
	r.add(event{Revision: 14})
	if r.complete != 12 || r.pending != 14 {
		t.Fatalf("a later revision completes the earlier: %+v", r)
	}
	r.comment([]byte(": drover events from revision 3"))
	if r.complete != 12 {
		t.Fatal("the stream's header moved the cursor")
	}
}
