package dockerbench

import (
	"os"
	"testing"

	"outcall.dev/outcall/test/dockerlab"
)

// TestMain removes the images this binary imported.
func TestMain(m *testing.M) { os.Exit(dockerlab.Main(m)) }
