package auth

import "github.com/drover-project/drover/api"

// Verb is what a request does.
type Verb int

const (
	Read Verb = iota
	Write
)

// Allowed reports whether role may do verb on kind through the user API.
// Agents never pass here: they are confined to the agent endpoints, which
// check the machine themselves.
//
//	admin    everything
//	operator everything but users and tokens of other people
//	viewer   read, except users and tokens
func Allowed(role string, verb Verb, kind string) bool {
	userAdmin := kind == api.KindUser || kind == api.KindToken
	switch role {
	case api.RoleAdmin:
		return true
	case api.RoleOperator:
		if userAdmin {
			return false
		}
		return true
	case api.RoleViewer:
		return verb == Read && !userAdmin
	}
	return false
}

// CanAct reports whether role may start lifecycle actions and jobs.
func CanAct(role string) bool {
	return role == api.RoleAdmin || role == api.RoleOperator
}
