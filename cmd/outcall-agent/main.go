// Command outcall-agent is the shim inside agent containers (S005),
// mounted read-only at /usr/local/bin/outcall when a container is created
// with helper mounts. Everything is in pkg/shim; this only wires it.
package main

import (
	"os"

	"outcall.dev/outcall/pkg/shim"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(shim.Main(version))
}
