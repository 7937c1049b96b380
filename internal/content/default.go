package content

import "embed"

// DefaultName is the name of the built-in pack.
const DefaultName = "drover-default"

//go:embed default
var defaultFS embed.FS

// Default returns the built-in content pack, drover-default, embedded from
// internal/content/default. Each call returns a new copy. Its tests load
// and validate it, and run its scripts; if it did not load that would be
// a defect of the build, so Default panics then.
func Default() *Pack {
	p, err := LoadFS(defaultFS, "default")
	if err != nil {
		panic("content: the built-in pack does not load: " + err.Error())
	}
	return p
}
