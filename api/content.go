package api

import (
	"encoding/json"
	"time"
)

// KindContentPack is an installed content pack. Packs are installed with
// POST /api/v1/content and removed with DELETE /api/v1/content/NAME; they
// cannot be applied like other objects.
const KindContentPack = "ContentPack"

// ContentPack is a versioned bundle of tasks, templates, workflows,
// profiles and params. Its objects are written to the store with
// Meta.Source "pack:NAME@VERSION"; an object a user writes with the same
// kind and name overrides the pack's, and deleting the override brings the
// pack's back.
type ContentPack struct {
	Meta
	Version  string            `json:"version"`
	Requires []PackRequirement `json:"requires,omitempty"`
	// File and Line locate the pack's header where it was loaded from.
	File    string       `json:"file,omitempty"`
	Line    int          `json:"line,omitempty"`
	Objects []PackObject `json:"objects"`
	// Digest is "sha256:..." over the pack's canonical content.
	Digest string            `json:"digest"`
	Status ContentPackStatus `json:"status,omitempty"`
}

// PackRequirement names another pack, with an optional semantic version
// constraint (">=1.0.0, <2.0.0").
type PackRequirement struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Line    int    `json:"line,omitempty"`
}

// PackObject is one object of a pack and where it was written.
type PackObject struct {
	Kind     string          `json:"kind"`
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	File     string          `json:"file"`
	Line     int             `json:"line"`
	Lines    map[string]int  `json:"lines,omitempty"`
	BodyLine int             `json:"bodyLine,omitempty"`
}

// ContentPackStatus is what the server records when it installs a pack.
type ContentPackStatus struct {
	InstalledAt *time.Time `json:"installedAt,omitempty"`
	InstalledBy string     `json:"installedBy,omitempty"`
	// Builtin is set on the pack shipped in the drover binary.
	Builtin bool `json:"builtin,omitempty"`
	// PreviousVersion is the version this install replaced, if any.
	PreviousVersion string `json:"previousVersion,omitempty"`
	// Changes lists what this install changed, as "Kind/name".
	Changes PackChanges `json:"changes"`
	// Overridden lists the pack's objects that users have replaced with
	// their own, as "Kind/name".
	Overridden []string `json:"overridden,omitempty"`
}

// PackChanges is what one install of a pack added, changed and removed.
type PackChanges struct {
	Added   []string `json:"added,omitempty"`
	Changed []string `json:"changed,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// PackSource is the Meta.Source of objects of a pack.
func PackSource(name, version string) string { return "pack:" + name + "@" + version }

// ContentPushResponse answers POST /api/v1/content.
type ContentPushResponse struct {
	Pack            string      `json:"pack"`
	Version         string      `json:"version"`
	PreviousVersion string      `json:"previousVersion,omitempty"`
	Unchanged       bool        `json:"unchanged,omitempty"`
	Changes         PackChanges `json:"changes"`
	Overridden      []string    `json:"overridden,omitempty"`
	Revision        int64       `json:"revision"`
	// Kept is "kept" when this version went into the endpoint's pack
	// library, "replaced" when the library held this version with other
	// content (it now holds this one), empty when it held it already.
	Kept string `json:"kept,omitempty"`
	// LibraryOnly: the pack was kept in the library, not installed.
	LibraryOnly bool `json:"libraryOnly,omitempty"`
}
