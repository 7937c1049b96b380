// Package fetch saves what a drover server answers to files, for the
// benchmarks' profiles.
package fetch

import (
	"context"
	"io"
	"os"

	"github.com/drover-project/drover/api"
)

// ToFile saves an authenticated GET of path to file.
func ToFile(ctx context.Context, c *api.Client, path, file string) error {
	body, err := c.Stream(ctx, path)
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
