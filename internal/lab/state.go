// Package lab builds the multi-site demo on one machine (drover lab): a
// manager and N site endpoints as separate drover server processes, each
// site with its own simulated machines (real agent code, real commands),
// Toxiproxy between the manager and the sites for latency, and, as root,
// each site in its own network namespace. Everything it starts is
// recorded in DIR/lab.json, so that status and down work from any shell.
package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// stateFile is the lab's record, in its directory.
const stateFile = "lab.json"

// Phases of a lab.
const (
	PhaseBuilding = "building"
	PhaseReady    = "ready"
	PhaseFailed   = "failed"
)

// State is what a lab records of itself: enough for status, env and down
// to find every process, namespace and link it made.
type State struct {
	Dir string `json:"dir"`
	// CreatedDir is true when up made Dir (down then removes it; else only
	// what is inside).
	CreatedDir bool      `json:"createdDir"`
	ID         string    `json:"id"`
	Phase      string    `json:"phase"`
	Started    time.Time `json:"started"`
	// BuildSeconds is how long up took.
	BuildSeconds float64 `json:"buildSeconds,omitempty"`
	// Netns is true when the sites run in network namespaces.
	Netns    bool     `json:"netns"`
	Latency  string   `json:"latency"`
	Machines int      `json:"machines"`
	Manager  Endpoint `json:"manager"`
	Sites    []Site   `json:"sites"`
	Procs    []Proc   `json:"procs"`

	mu   sync.Mutex
	path string
	// exits says how processes up started ended (while up runs).
	exits map[string]string
}

// Endpoint is a drover server of the lab.
type Endpoint struct {
	Name    string `json:"name"`
	DataDir string `json:"dataDir"`
	// URL is where the endpoint is reached from this host directly.
	URL    string `json:"url,omitempty"`
	CAFile string `json:"caFile"`
}

// Site is a site endpoint and how the manager reaches it.
type Site struct {
	Endpoint
	// ProxyURL is the URL the manager has for the site: its Toxiproxy
	// listener, which adds the lab's latency.
	ProxyURL string `json:"proxyURL,omitempty"`
	// Upstream is the site's API address the proxy forwards to.
	Upstream string `json:"upstream,omitempty"`
	// Netns, HostIf, HostAddr and SiteAddr are set in namespace mode: the
	// site's namespace, the host end of its veth pair and both addresses.
	Netns    string `json:"netns,omitempty"`
	HostIf   string `json:"hostIf,omitempty"`
	HostAddr string `json:"hostAddr,omitempty"`
	SiteAddr string `json:"siteAddr,omitempty"`
}

// Proc is a process the lab started, in a session of its own (its pid is
// the session id), identified also by its start time so that a reused pid
// is never signalled.
type Proc struct {
	Name      string   `json:"name"`
	Pid       int      `json:"pid"`
	StartTime uint64   `json:"startTime"`
	Netns     string   `json:"netns,omitempty"`
	Log       string   `json:"log"`
	Args      []string `json:"args"`
}

// DefaultDir is where the lab lives without --dir: $DROVER_LAB_DIR, else
// TMPDIR/drover-lab-UID.
func DefaultDir() string {
	if d := os.Getenv("DROVER_LAB_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "drover-lab-"+strconv.Itoa(os.Getuid()))
}

// labID names a lab's namespaces and links: the same directory always
// gives the same id, so down finds what a crashed up left.
func labID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:])[:6]
}

// ErrNoLab is returned when the directory holds no lab.
var ErrNoLab = errors.New("no lab")

// Load reads the lab of dir.
func Load(dir string) (*State, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(abs, stateFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (start one with drover lab up --dir %s)", ErrNoLab, abs, abs)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	s.path = p
	return &s, nil
}

// save writes the state atomically; callers hold s.mu.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// update changes the state under its lock and saves it.
func (s *State) update(fn func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
	return s.save()
}

// Site returns the site called name.
func (s *State) Site(name string) (*Site, error) {
	var names []string
	for i := range s.Sites {
		if s.Sites[i].Name == name {
			return &s.Sites[i], nil
		}
		names = append(names, s.Sites[i].Name)
	}
	return nil, fmt.Errorf("the lab has no site %q (its sites: %v)", name, names)
}

// procLog is where a process of the lab writes its output.
func (s *State) procLog(name string) string {
	return filepath.Join(s.Dir, "logs", name+".log")
}
