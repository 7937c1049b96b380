package model

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/drover-project/drover/api"
)

// DefaultLeaseTime is a subnet's lease time when it sets none.
const DefaultLeaseTime = time.Hour

// Lease time bounds: shorter leases would be renewed faster than a client
// can get an answer under load; longer ones outlive any reasonable change.
const (
	MinLeaseTime = 10 * time.Second
	MaxLeaseTime = 365 * 24 * time.Hour
)

// reservedOptions are DHCP options the server sets itself from the
// protocol; a subnet cannot override them.
var reservedOptions = map[int]string{
	0:   "pad",
	1:   "subnet mask (from cidr)",
	50:  "requested address",
	51:  "lease time (use leaseTime)",
	52:  "option overload",
	53:  "message type",
	54:  "server identifier",
	55:  "parameter request list",
	57:  "maximum message size",
	61:  "client identifier",
	82:  "relay agent information",
	255: "end",
}

// ParseIPv4 parses a dotted IPv4 address.
func ParseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address", s)
	}
	return a, nil
}

// ParseSubnetCIDR parses a subnet's cidr: an IPv4 network of /8 to /30
// given by its network address.
func ParseSubnetCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 network (want 10.0.0.0/24)", s)
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%q: prefix length %d is out of range 8..30", s, p.Bits())
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (the network is %s)", s, p.Masked())
	}
	return p, nil
}

// SubnetLeaseTime is the subnet's lease time (its default when unset).
func SubnetLeaseTime(s *api.Subnet) time.Duration {
	d, err := time.ParseDuration(s.LeaseTime)
	if err != nil || d <= 0 {
		return DefaultLeaseTime
	}
	return d
}

func validateSubnet(s *api.Subnet) error {
	p, err := ParseSubnetCIDR(s.CIDR)
	if err != nil {
		return &FieldError{Field: "cidr", Err: err}
	}
	s.CIDR = p.String()
	inside := func(field, v string) (netip.Addr, error) {
		a, err := ParseIPv4(v)
		if err != nil {
			return a, &FieldError{Field: field, Err: err}
		}
		if !p.Contains(a) {
			return a, fieldErr(field, "%s is outside %s", a, p)
		}
		if a == p.Addr() || a == lastAddr(p) {
			return a, fieldErr(field, "%s is the network or broadcast address of %s", a, p)
		}
		return a, nil
	}
	if r := s.Range; r != nil {
		start, err := inside("range.start", r.Start)
		if err != nil {
			return err
		}
		end, err := inside("range.end", r.End)
		if err != nil {
			return err
		}
		if end.Less(start) {
			return fieldErr("range", "start %s is after end %s", start, end)
		}
		r.Start, r.End = start.String(), end.String()
	}
	if s.Router != "" {
		a, err := inside("router", s.Router)
		if err != nil {
			return err
		}
		s.Router = a.String()
	}
	for i, d := range s.DNS {
		a, err := ParseIPv4(d)
		if err != nil {
			return &FieldError{Field: fmt.Sprintf("dns[%d]", i), Err: err}
		}
		s.DNS[i] = a.String()
	}
	if s.Domain != "" {
		if err := validateHostname(s.Domain); err != nil {
			return &FieldError{Field: "domain", Err: err}
		}
	}
	if s.LeaseTime != "" {
		d, err := time.ParseDuration(s.LeaseTime)
		if err != nil || d < MinLeaseTime || d > MaxLeaseTime {
			return fieldErr("leaseTime", "%q is not a duration between %s and %s (for example 12h)", s.LeaseTime, MinLeaseTime, MaxLeaseTime)
		}
	}
	if s.NextServer != "" {
		a, err := ParseIPv4(s.NextServer)
		if err != nil {
			return &FieldError{Field: "nextServer", Err: err}
		}
		s.NextServer = a.String()
	}
	for code, v := range s.Options {
		if _, _, err := DHCPOption(code, v); err != nil {
			return &FieldError{Field: "options." + code, Err: err}
		}
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func validateReservation(r *api.Reservation) error {
	mac, err := api.NormalizeMAC(r.MAC)
	if err != nil {
		return &FieldError{Field: "mac", Err: err}
	}
	r.MAC = mac
	a, err := ParseIPv4(r.IP)
	if err != nil {
		return &FieldError{Field: "ip", Err: err}
	}
	if !a.IsGlobalUnicast() && !a.IsPrivate() {
		return fieldErr("ip", "%s is not a unicast address", a)
	}
	r.IP = a.String()
	if r.Hostname != "" {
		if err := validateHostname(r.Hostname); err != nil {
			return &FieldError{Field: "hostname", Err: err}
		}
	}
	return nil
}

// validateHostname checks a DNS name: dot-separated labels of 1 to 63
// letters, digits and '-', not starting or ending with '-'.
func validateHostname(h string) error {
	if len(h) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		ok := len(label) > 0 && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("%q is not a DNS name (labels of letters, digits and '-', separated by dots)", h)
		}
	}
	return nil
}

// DHCPOption parses a subnet's extra option: its code (1..254, not one the
// server sets itself) and its value, typed by prefix (see api.Subnet).
func DHCPOption(code, value string) (uint8, []byte, error) {
	n, err := strconv.Atoi(code)
	if err != nil || n < 1 || n > 254 {
		return 0, nil, fmt.Errorf("option code %q is not a number in 1..254", code)
	}
	if what, ok := reservedOptions[n]; ok {
		return 0, nil, fmt.Errorf("option %d (%s) is set by the server", n, what)
	}
	b, err := optionValue(value)
	if err != nil {
		return 0, nil, fmt.Errorf("option %d: %w", n, err)
	}
	if len(b) > 255 {
		return 0, nil, fmt.Errorf("option %d: value is %d bytes long (at most 255)", n, len(b))
	}
	return uint8(n), b, nil
}

func optionValue(v string) ([]byte, error) {
	kind, rest, typed := strings.Cut(v, ":")
	if typed {
		switch kind {
		case "ip":
			return ipList(rest)
		case "text":
			return []byte(rest), nil
		case "hex":
			b, err := hex.DecodeString(strings.ReplaceAll(rest, ":", ""))
			if err != nil {
				return nil, fmt.Errorf("%q is not hex bytes (hex:0a0b0c)", v)
			}
			return b, nil
		case "u8", "u16", "u32":
			bits, _ := strconv.Atoi(kind[1:])
			n, err := strconv.ParseUint(rest, 10, bits)
			if err != nil {
				return nil, fmt.Errorf("%q is not an unsigned %d-bit number", rest, bits)
			}
			b := binary.BigEndian.AppendUint32(nil, uint32(n))
			return b[4-bits/8:], nil
		case "bool":
			switch rest {
			case "true":
				return []byte{1}, nil
			case "false":
				return []byte{0}, nil
			}
			return nil, fmt.Errorf("%q is not true or false", rest)
		}
	}
	if b, err := ipList(v); err == nil {
		return b, nil
	}
	if v == "" {
		return nil, errors.New("empty value")
	}
	return []byte(v), nil
}

func ipList(s string) ([]byte, error) {
	var b []byte
	for _, part := range strings.Split(s, ",") {
		a, err := ParseIPv4(part)
		if err != nil {
			return nil, err
		}
		b = append(b, a.AsSlice()...)
	}
	return b, nil
}
