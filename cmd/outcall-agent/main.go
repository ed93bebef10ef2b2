// Command outcall-agent is the shim inside agent containers. It talks only to
// agent.sock; the agent API arrives with a later issue, so for now it reports
// that the daemon cannot be reached, with the documented exit code.
package main

import (
	"fmt"
	"os"

	"outcall.dev/outcall/pkg/api"
)

func main() {
	fmt.Fprintln(os.Stderr, "outcall-agent: the agent API is not available in this build")
	os.Exit(api.UnreachableExitCode)
}
