package api

import (
	"context"
	"net/http"
	"net/url"
)

// KindTable is the kind of a Table answer.
const KindTable = "Table"

// Table is a list as `drover get` prints it, made by the server
// (GET /api/v1/objects/machines?view=table): a row of strings per object
// instead of the object, so that the table of 10,000 machines is a fifth
// of the bytes of their summaries (Kubernetes' server-side printing).
type Table struct {
	Kind     string        `json:"kind"` // always "Table"
	Of       string        `json:"of"`   // the kind listed
	Revision int64         `json:"revision"`
	Columns  []TableColumn `json:"columns"`
	// Rows hold one cell per column, in the order of Columns.
	Rows [][]string `json:"rows"`
}

// TableColumn describes one column of a Table.
type TableColumn struct {
	Name string `json:"name"`
	// Wide columns are shown only with -o wide.
	Wide bool `json:"wide,omitempty"`
	// HideEmpty columns are shown only when some row has a value.
	HideEmpty bool `json:"hideEmpty,omitempty"`
	// Type is "" (cells are shown as they are) or "time" (cells are RFC
	// 3339 times, or empty, shown as ages: "12s ago").
	Type string `json:"type,omitempty"`
}

// TableColumnTime marks a column of times.
const TableColumnTime = "time"

// Table lists the objects of kind matching selector as a Table.
func (c *Client) Table(ctx context.Context, kind, selector string) (*Table, error) {
	q := url.Values{"view": {ViewTable}}
	if selector != "" {
		q.Set("selector", selector)
	}
	var out Table
	err := c.Do(ctx, http.MethodGet, "/api/v1/objects/"+url.PathEscape(kind)+"?"+q.Encode(), nil, &out)
	return &out, err
}
