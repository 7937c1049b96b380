package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/tables"
)

func printSubnets(w io.Writer, items []json.RawMessage, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAME\tCIDR\tRANGE\tROUTER\tDNS\tLEASE\tMODE")
	for _, raw := range items {
		var s api.Subnet
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		rng, mode := "-", "dhcp"
		if s.Range != nil {
			rng = s.Range.Start + "-" + s.Range.End
		}
		if s.Proxy {
			mode = "proxy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.CIDR, rng, tables.Dash(s.Router), tables.Dash(strings.Join(s.DNS, ",")), tables.Dash(s.LeaseTime), mode)
	}
	return nil
}

func printReservations(w io.Writer, items []json.RawMessage, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAME\tMAC\tIP\tHOSTNAME")
	for _, raw := range items {
		var r api.Reservation
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.MAC, r.IP, tables.Dash(r.Hostname))
	}
	return nil
}

// printLeases lists leases in address order, with the time left.
func printLeases(w io.Writer, items []json.RawMessage, wide bool) error {
	leases := make([]api.Lease, 0, len(items))
	for _, raw := range items {
		var l api.Lease
		if err := json.Unmarshal(raw, &l); err != nil {
			return err
		}
		leases = append(leases, l)
	}
	sort.Slice(leases, func(i, j int) bool {
		a, _ := netip.ParseAddr(leases[i].IP)
		b, _ := netip.ParseAddr(leases[j].IP)
		return a.Less(b)
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "IP\tMAC\tSUBNET\tHOSTNAME\tSTATE\tEXPIRES")
	now := time.Now()
	for _, l := range leases {
		exp := l.ExpiresAt.Local().Format(time.DateTime)
		if l.State == api.LeaseBound {
			if left := l.ExpiresAt.Sub(now); left > 0 {
				exp = "in " + left.Truncate(time.Second).String()
			} else {
				exp = "expired"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, l.MAC, l.Subnet, tables.Dash(l.Hostname), l.State, exp)
	}
	return nil
}

func init() {
	tableFormats[api.KindSubnet] = printSubnets
	tableFormats[api.KindReservation] = printReservations
	tableFormats[api.KindLease] = printLeases
}
