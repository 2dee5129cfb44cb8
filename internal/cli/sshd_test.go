package cli_test

import (
	"testing"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

// startSSHD runs a real OpenSSH sshd on 127.0.0.1 for one test, with a client key in
// home/.ssh/id_ed25519 and the host key in home/.ssh/known_hosts. It returns the port.
func startSSHD(t *testing.T, home string) int {
	t.Helper()
	return testkit.StartSSHD(t, home, "")
}

// startSSHDWith is startSSHD with extra sshd_config lines.
func startSSHDWith(t *testing.T, home, extraConfig string) int {
	t.Helper()
	return testkit.StartSSHD(t, home, extraConfig)
}
