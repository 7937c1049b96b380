package server

import (
	"context"
	"fmt"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// checkReservations refuses reservations of an apply whose address lies in
// no subnet (stored or in the same apply), or whose MAC or address another
// reservation already has: the DHCP server could honour only one of them.
func (s *Server) checkReservations(ctx context.Context, objs []api.Object) error {
	var batch []int
	for i, obj := range objs {
		if _, ok := obj.(*api.Reservation); ok {
			batch = append(batch, i)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	subnets := map[string]*api.Subnet{}
	reservations := map[string]*api.Reservation{}
	if err := listInto(ctx, s.st, api.KindSubnet, func(o *api.Subnet) { subnets[o.Name] = o }); err != nil {
		return err
	}
	if err := listInto(ctx, s.st, api.KindReservation, func(o *api.Reservation) { reservations[o.Name] = o }); err != nil {
		return err
	}
	for _, obj := range objs {
		switch o := obj.(type) {
		case *api.Subnet:
			subnets[o.Name] = o
		case *api.Reservation:
			reservations[o.Name] = o
		}
	}
	for _, i := range batch {
		r := objs[i].(*api.Reservation)
		derr := func(field, format string, args ...any) error {
			return &model.DocError{Index: i + 1, Kind: r.Kind, Name: r.Name, Field: field, Err: fmt.Errorf(format, args...)}
		}
		ip, _ := model.ParseIPv4(r.IP)
		found := false
		for _, sn := range subnets {
			if p, err := model.ParseSubnetCIDR(sn.CIDR); err == nil && p.Contains(ip) {
				found = true
				break
			}
		}
		if !found {
			return derr("ip", "%s is in no subnet; apply a Subnet whose cidr holds it first (or in the same file)", r.IP)
		}
		for _, other := range reservations {
			if other.Name == r.Name {
				continue
			}
			if other.IP == r.IP {
				return derr("ip", "%s is already reserved by reservation %q", r.IP, other.Name)
			}
			if other.MAC == r.MAC {
				return derr("mac", "%s already has reservation %q", r.MAC, other.Name)
			}
		}
	}
	return nil
}

// listInto decodes every object of a kind and hands it to fn.
func listInto[T any, P interface {
	*T
	api.Object
}](ctx context.Context, st store.Store, kind string, fn func(P)) error {
	recs, _, err := st.List(ctx, kind, store.ListOptions{})
	if err != nil {
		return err
	}
	for _, rec := range recs {
		obj := P(new(T))
		if err := model.Decode(rec, obj); err != nil {
			return err
		}
		fn(obj)
	}
	return nil
}
