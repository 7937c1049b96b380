package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/drover-project/drover/api"
)

func TestApplyReservationChecks(t *testing.T) {
	e := startServer(t, nil)
	ctx := context.Background()
	subnet := &api.Subnet{Meta: api.Meta{Kind: api.KindSubnet, Name: "lab"}, CIDR: "10.9.0.0/24"}
	res := func(name, mac, ip string) *api.Reservation {
		return &api.Reservation{Meta: api.Meta{Kind: api.KindReservation, Name: name}, MAC: mac, IP: ip}
	}
	_, err := e.admin.ApplyObjects(ctx, res("r1", "52:54:00:00:00:01", "10.9.0.10"))
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, "10.9.0.10 is in no subnet") {
		t.Errorf("no subnet: %s", ae.Message)
	}
	// The subnet may come in the same apply, and MACs are normalized.
	e.mustApply(e.admin, subnet, res("r1", "52-54-00-00-00-01", "10.9.0.10"))
	var got api.Reservation
	if err := e.admin.Get(ctx, api.KindReservation, "r1", &got); err != nil || got.MAC != "52:54:00:00:00:01" {
		t.Fatalf("stored reservation %+v %v", got, err)
	}
	_, err = e.admin.ApplyObjects(ctx, res("r2", "52:54:00:00:00:02", "10.9.0.10"))
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, `already reserved by reservation "r1"`) {
		t.Errorf("same ip: %s", ae.Message)
	}
	_, err = e.admin.ApplyObjects(ctx, res("r2", "52:54:00:00:00:01", "10.9.0.11"))
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, `already has reservation "r1"`) {
		t.Errorf("same mac: %s", ae.Message)
	}
	lease := &api.Lease{Meta: api.Meta{Kind: api.KindLease, Name: "10.9.0.50"}, MAC: "52:54:00:00:00:09", IP: "10.9.0.50"}
	_, err = e.admin.ApplyObjects(ctx, lease)
	if ae := apiErr(t, err, http.StatusBadRequest); !strings.Contains(ae.Message, "managed by drover") {
		t.Errorf("lease apply: %s", ae.Message)
	}
}
