package cli

import (
	"io"

	"github.com/spf13/cobra"
)

// CommandTree builds the command tree as Main does, for tests that walk every command.
func CommandTree() *cobra.Command {
	a := &app{stdout: io.Discard, stderr: io.Discard, flags: map[string]*string{}}
	return a.rootCmd()
}
