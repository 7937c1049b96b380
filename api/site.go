package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// KindSite is a site endpoint registered with this endpoint, which is then
// its manager. Sites are added with POST /api/v1/sites and removed with
// DELETE /api/v1/sites/NAME; they cannot be applied like other objects.
const KindSite = "Site"

// SiteLabel is the label a manager puts on every object it mirrors from a
// site, so that a selector (-l site=east) picks one site's objects.
const SiteLabel = "site"

// Site is a registered site: where it is, whom to trust, and the
// credential of the user this manager has on it. Status is not stored: the
// manager fills it in from its mirror of the site when it is read.
type Site struct {
	Meta
	// URL is the site's API endpoint (https://host:port).
	URL string `json:"url"`
	// CACert is the PEM certificate of the CA the site's certificate is
	// checked against.
	CACert string `json:"caCert"`
	// ManagementUser is the user this manager created on the site.
	ManagementUser string `json:"managementUser"`
	// Credential is that user's password, sealed with the manager's
	// secret key; every read shows it masked.
	Credential string `json:"credential,omitempty"`
	// EndpointID is the site's own endpoint id, learned when it was added.
	EndpointID string    `json:"endpointID,omitempty"`
	AddedAt    time.Time `json:"addedAt"`
	// Sync is the version set the site is kept at, if any.
	Sync   *SiteSync  `json:"sync,omitempty"`
	Status SiteStatus `json:"status,omitempty"`
}

// SiteStatus is what the manager's mirror knows of a site.
type SiteStatus struct {
	// Connected is true while the mirror follows the site's event stream.
	Connected   bool       `json:"connected"`
	LastContact *time.Time `json:"lastContact,omitempty"`
	// Error is why the mirror is not connected, if it is not.
	Error string `json:"error,omitempty"`
	// SiteRevision is the site's latest revision the manager knows of;
	// Cursor is the revision up to which the mirror holds every change.
	SiteRevision int64 `json:"siteRevision"`
	Cursor       int64 `json:"cursor"`
	// LagRevisions is SiteRevision - Cursor; LagSeconds is how long the
	// mirror has been behind the site's latest known revision (0 when it
	// holds it).
	LagRevisions int64   `json:"lagRevisions"`
	LagSeconds   float64 `json:"lagSeconds"`
	// Relists counts the full listings of the site: the first contact,
	// and each time the site said the cursor was too old (410).
	Relists int64 `json:"relists"`
	// Objects is how many of the site's objects the mirror holds.
	Objects int `json:"objects"`
	// Version is the drover version the site reported when the mirror
	// last connected.
	Version string `json:"version,omitempty"`
	// Sync compares the site with its version set (nil without one).
	Sync *SiteSyncStatus `json:"sync,omitempty"`
}

// SiteAddRequest registers a site. The admin credentials are used once, to
// create this manager's user on the site, and are not kept.
type SiteAddRequest struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	CACert   string `json:"caCert"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// SiteRemoveResponse says what removing a site did.
type SiteRemoveResponse struct {
	Name string `json:"name"`
	// UserDeleted is true when the management user was deleted on the
	// site (false with force when the site could not be reached).
	UserDeleted bool   `json:"userDeleted"`
	Warning     string `json:"warning,omitempty"`
}

// EndpointInfo is the answer of GET /api/v1/endpoint: who this endpoint is
// and its store revisions, cheap enough to poll.
type EndpointInfo struct {
	// ID is the endpoint's stable random id, made on its first start.
	ID             string `json:"id"`
	Revision       int64  `json:"revision"`
	OldestRevision int64  `json:"oldestRevision"`
	Version        string `json:"version,omitempty"`
}

// AddSite registers a site with this endpoint (admin only).
func (c *Client) AddSite(ctx context.Context, req SiteAddRequest) (*Site, error) {
	var out Site
	err := c.Do(ctx, http.MethodPost, "/api/v1/sites", req, &out)
	return &out, err
}

// RemoveSite deletes this manager's user on the site, then the site and
// its mirror. With force, a site that cannot be reached is removed here
// anyway (its management user stays on the site).
func (c *Client) RemoveSite(ctx context.Context, name string, force bool) (*SiteRemoveResponse, error) {
	path := "/api/v1/sites/" + url.PathEscape(name)
	if force {
		path += "?force=1"
	}
	var out SiteRemoveResponse
	err := c.Do(ctx, http.MethodDelete, path, nil, &out)
	return &out, err
}

// EndpointInfo reads the endpoint's id and revisions.
func (c *Client) EndpointInfo(ctx context.Context) (*EndpointInfo, error) {
	var out EndpointInfo
	err := c.Do(ctx, http.MethodGet, "/api/v1/endpoint", nil, &out)
	return &out, err
}

// GetAt reads one object into out: of the endpoint itself when site is
// empty, else (on a manager) the one mirrored from that site.
func (c *Client) GetAt(ctx context.Context, site, kind, name string, out any) error {
	path := "/api/v1/objects/" + url.PathEscape(kind) + "/" + url.PathEscape(name)
	if site != "" {
		path += "?site=" + url.QueryEscape(site)
	}
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// DeleteAt deletes an object: of the endpoint itself when site is empty,
// else (on a manager) on that site, which the manager forwards it to.
func (c *Client) DeleteAt(ctx context.Context, site, kind, name string) error {
	path := "/api/v1/objects/" + url.PathEscape(kind) + "/" + url.PathEscape(name)
	if site != "" {
		path += "?site=" + url.QueryEscape(site)
	}
	return c.Do(ctx, http.MethodDelete, path, nil, nil)
}
