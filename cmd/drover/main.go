// Command drover is the one binary of drover: server, agent and client.
package main

import (
	"os"

	"github.com/drover-project/drover/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
