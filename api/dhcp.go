package api

import "time"

// DHCP kinds.
const (
	KindSubnet      = "Subnet"
	KindReservation = "Reservation"
	KindLease       = "Lease"
)

// Subnet is an IPv4 network drover's DHCP server answers for: requests
// arriving on an interface with an address in CIDR, or relayed by an agent
// whose giaddr is in CIDR.
type Subnet struct {
	Meta
	// CIDR is the network, "10.0.0.0/24".
	CIDR string `json:"cidr"`
	// Range is the pool of dynamic addresses; reservations may lie outside
	// it. A subnet without a range serves reservations only.
	Range *IPRange `json:"range,omitempty"`
	// Router is the default gateway (option 3).
	Router string `json:"router,omitempty"`
	// DNS servers (option 6).
	DNS []string `json:"dns,omitempty"`
	// Domain is the domain name (option 15).
	Domain string `json:"domain,omitempty"`
	// LeaseTime is a Go duration ("12h"); default 1h.
	LeaseTime string `json:"leaseTime,omitempty"`
	// NextServer is the TFTP server (siaddr) if not the server's
	// --boot-address.
	NextServer string `json:"nextServer,omitempty"`
	// Proxy turns the subnet into proxy DHCP: drover answers only PXE
	// clients, with boot information and no address, and leaves addresses
	// to the DHCP server already on the network.
	Proxy bool `json:"proxy,omitempty"`
	// Options are extra DHCP options by code ("42": "10.0.0.1"). A value is
	// typed by a prefix: "ip:" (comma-separated IPv4 addresses), "text:",
	// "hex:", "u8:", "u16:", "u32:", "bool:"; without one, a list of IPv4
	// addresses is sent as addresses and anything else as text.
	Options map[string]string `json:"options,omitempty"`
}

// IPRange is an inclusive range of IPv4 addresses.
type IPRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Reservation gives a machine's NIC a fixed address.
type Reservation struct {
	Meta
	MAC string `json:"mac"`
	IP  string `json:"ip"`
	// Hostname is sent as option 12.
	Hostname string `json:"hostname,omitempty"`
}

// Lease states.
const (
	LeaseBound    = "bound"
	LeaseReleased = "released"
	// LeaseDeclined: a client found the address in use (DECLINE); it is
	// not handed out again until ExpiresAt.
	LeaseDeclined = "declined"
)

// Lease is an address handed out by drover's DHCP server. Its name is the
// address. Leases are written by drover only, before the client is
// acknowledged; deleting one frees its address.
type Lease struct {
	Meta
	MAC       string    `json:"mac"`
	IP        string    `json:"ip"`
	Subnet    string    `json:"subnet"`
	Hostname  string    `json:"hostname,omitempty"`
	ExpiresAt time.Time `json:"expiresAt"`
	State     string    `json:"state"`
}
