package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// KindVersionSet names content packs at exact versions, and optionally the
// drover version, that a manager keeps its sites at (drover sites sync).
const KindVersionSet = "VersionSet"

// KindPackVersion is one version of a content pack kept in an endpoint's
// pack library, named PACK@VERSION. Every pack installed on an endpoint
// is kept there, and so is every pack pushed with --library-only; a
// manager pushes packs to its sites from its library. Kept versions are
// read-only: deleting one (drover delete packversion site@1.2.0) is refused
// while a version set names it.
const KindPackVersion = "PackVersion"

// VersionSet is what a site synced to it should run.
type VersionSet struct {
	Meta
	// Packs are the content packs the site must have, each at exactly
	// this version (and with the content the manager's library holds for
	// it).
	Packs []VersionSetPack `json:"packs"`
	// Drover is the drover version the sites should run (v1.4.0), if
	// given. It is compared, never installed: binaries are upgraded by
	// whoever runs the site.
	Drover string `json:"drover,omitempty"`
}

// VersionSetPack is one pack of a version set.
type VersionSetPack struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// PackVersion is a kept version of a content pack: the pack as it was
// pushed, byte for byte what POST /api/v1/content takes.
type PackVersion struct {
	Meta
	Pack    string `json:"pack"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	// KeptAt and KeptBy say when and by whom it was first kept.
	KeptAt time.Time `json:"keptAt"`
	KeptBy string    `json:"keptBy,omitempty"`
	// Content is the pack (content.Pack as JSON).
	Content json.RawMessage `json:"content"`
}

// PackVersionName is the name of the PackVersion of a pack's version.
func PackVersionName(pack, version string) string { return pack + "@" + version }

// SiteSync is what the operator decided about keeping a site at a version
// set (stored on the Site).
type SiteSync struct {
	VersionSet string `json:"versionSet,omitempty"`
	// Enabled makes the manager push what differs; without it the
	// differences are only reported.
	Enabled bool `json:"enabled,omitempty"`
}

// Sync states of a site (SiteSyncStatus.State).
const (
	SyncInSync  = "in-sync"
	SyncDrifted = "drifted"
	SyncFailed  = "failed"
	SyncUnknown = "unknown"
)

// SiteSyncStatus is how a site compares with its version set, computed by
// the manager from its mirror of the site (never stored).
type SiteSyncStatus struct {
	VersionSet string `json:"versionSet"`
	Enabled    bool   `json:"enabled"`
	// State is in-sync, drifted (differs and is not fixed yet, sync is
	// disabled, or the drover version differs), failed (a push was
	// refused, or the manager lacks a pack version the set names) or
	// unknown (the site is not connected; Differences are as last
	// mirrored).
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Differences say what differs from the set.
	Differences []SyncDifference `json:"differences,omitempty"`
	// Unmanaged are packs installed on the site that the set does not
	// name ("name version"): reported, left alone.
	Unmanaged []string `json:"unmanaged,omitempty"`
	// CheckedAt is when the site was last compared with the set.
	CheckedAt *time.Time `json:"checkedAt,omitempty"`
	// LastPush is the last pack pushed to the site and when.
	LastPush   string     `json:"lastPush,omitempty"`
	LastPushAt *time.Time `json:"lastPushAt,omitempty"`
}

// What a SyncDifference is about.
const (
	DiffMissing = "missing" // the site lacks the pack
	DiffVersion = "version" // the site has another version
	DiffContent = "content" // same version, other content (digest)
	DiffDrover  = "drover"  // the site runs another drover version
)

// SyncDifference is one way a site differs from its version set.
type SyncDifference struct {
	// Pack is the pack's name; empty for the drover version.
	Pack string `json:"pack,omitempty"`
	What string `json:"what"`
	// Site is what the site has (its version, or drover version; empty
	// when missing), Want what the set wants.
	Site string `json:"site,omitempty"`
	Want string `json:"want"`
	// SiteDigest and WantDigest are the packs' digests, for content
	// differences.
	SiteDigest string `json:"siteDigest,omitempty"`
	WantDigest string `json:"wantDigest,omitempty"`
	// Action is what the manager does about it: "push", "pushed, waiting
	// for the mirror", "sync disabled", "cannot be pushed" (drover).
	Action string `json:"action,omitempty"`
	// Error is why it cannot be fixed: the site's refusal of a push, or
	// the pack version missing from the manager's library.
	Error string `json:"error,omitempty"`
}

// String says the difference in one line: "pack X: site has 1.1.0, set
// wants 1.2.0".
func (d SyncDifference) String() string {
	switch d.What {
	case DiffMissing:
		return "pack " + d.Pack + ": missing on the site, set wants " + d.Want
	case DiffVersion:
		return "pack " + d.Pack + ": site has " + d.Site + ", set wants " + d.Want
	case DiffContent:
		return "pack " + d.Pack + " " + d.Want + ": site's content differs (" + shortDigest(d.SiteDigest) + ", set wants " + shortDigest(d.WantDigest) + ")"
	case DiffDrover:
		site := d.Site
		if site == "" {
			site = "an unknown version"
		}
		return "drover version: site runs " + site + ", set wants " + d.Want
	}
	return d.What
}

func shortDigest(d string) string {
	const keep = len("sha256:") + 12
	if len(d) > keep {
		return d[:keep]
	}
	return d
}

// SiteSyncRequest changes how a site is kept at a version set. Nil fields
// stay as they are.
type SiteSyncRequest struct {
	VersionSet *string `json:"versionSet,omitempty"`
	Enabled    *bool   `json:"enabled,omitempty"`
	// Clear forgets the version set (and disables sync).
	Clear bool `json:"clear,omitempty"`
}

// SiteSync changes a site's version set or sync (admin only) and returns
// the site.
func (c *Client) SiteSync(ctx context.Context, name string, req SiteSyncRequest) (*Site, error) {
	var out Site
	err := c.Do(ctx, http.MethodPost, "/api/v1/sites/"+url.PathEscape(name)+"/sync", req, &out)
	return &out, err
}
