package deploy

import (
	"testing"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

// TestMain removes the programs the tests built (the Scope stand-in for the images).
func TestMain(m *testing.M) { testkit.Main(m) }
