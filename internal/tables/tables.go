// Package tables makes the rows `drover get` prints. The server uses it to
// answer lists in the table view (api.Table), the CLI to print single
// objects the same way.
package tables

import (
	"fmt"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
)

// MachineColumns are the columns of a machine table.
var MachineColumns = []api.TableColumn{
	{Name: "SITE", HideEmpty: true},
	{Name: "NAME"},
	{Name: "STATE"},
	{Name: "REACHABLE"},
	{Name: "LAST SEEN", Type: api.TableColumnTime},
	{Name: "RUN"},
	{Name: "DRIFT"},
	{Name: "CPUS"},
	{Name: "MEMORY"},
	{Name: "PROFILES"},
	{Name: "LABELS"},
	{Name: "MAC", Wide: true},
	{Name: "BOOT ENV", Wide: true},
	{Name: "LAST RUN", Wide: true},
	{Name: "MESSAGE", Wide: true},
}

// MachineRow is a machine's row, cell by cell as in MachineColumns.
func MachineRow(m *api.Machine) []string {
	cpus, mem, mac := "-", "-", "-"
	hw := m.Status.Hardware
	if hw == nil && m.Status.Inventory != nil {
		hw = m.Status.Inventory.Summary()
	}
	if hw != nil {
		cpus = fmt.Sprint(hw.CPUs)
		mem = BytesHuman(hw.MemoryBytes)
		mac = Dash(hw.PrimaryMAC)
	}
	reach := "no"
	if m.Status.Reachable {
		reach = "yes"
	}
	return []string{
		m.Site, m.Name, Dash(m.Status.State), reach, Time(m.Status.LastSeen), Dash(m.Status.Run),
		Drift(&m.Status), cpus, mem, Dash(strings.Join(m.Profiles, ",")), Labels(m.Labels),
		mac, m.BootEnvName(), Dash(strings.TrimSpace(m.Status.LastRun + " " + m.Status.LastRunResult)), Dash(m.Status.Message),
	}
}

// Time is a cell of a time column: RFC 3339 (seconds), or empty.
func Time(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// Age shows a time cell as an age ("12s ago"; "-" when empty).
func Age(cell string, now time.Time) string {
	if cell == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339Nano, cell)
	if err != nil {
		return cell
	}
	return Human(now.Sub(t)) + " ago"
}

// Human shows a duration the short way: 42s, 3m07s, 5h02m, 3d.
func Human(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// BytesHuman shows a size in binary units: 512B, 1.5GiB.
func BytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Labels shows labels as k=v,k2=v2 sorted by key ("-" when none).
func Labels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(l))
	for _, k := range model.SortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// Dash shows an empty cell as "-".
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Drift sums up a machine's drift: "config" (what its workflow would
// render now differs), "node" (its last verify found it drifted), "no", or
// "-" when it was never configured or verified.
func Drift(st *api.MachineStatus) string {
	var parts []string
	if st.ConfigDrift {
		parts = append(parts, "config")
	}
	if st.LastVerify != nil && st.LastVerify.Result == api.VerifyDrifted {
		parts = append(parts, "node")
	}
	switch {
	case len(parts) > 0:
		return strings.Join(parts, ",")
	case st.AppliedWorkflow != "" || st.LastVerify != nil:
		return "no"
	}
	return "-"
}
