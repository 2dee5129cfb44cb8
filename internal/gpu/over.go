package gpu

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ScriptRunner runs a POSIX sh script on some machine and returns its output and exit
// status: remote.Runner's method (SSH exec, the PTY gateway).
type ScriptRunner interface {
	Run(ctx context.Context, script string) (output string, exitCode int, err error)
}

// ErrNoSMI means nvidia-smi is not installed on the machine (no NVIDIA driver there).
var ErrNoSMI = errors.New("nvidia-smi not found")

// Over returns an SMI that runs `nvidia-smi` with QueryArgs through r (named name in
// errors). nvidia-smi missing on the far side is ErrNoSMI.
func Over(r ScriptRunner, name string) SMI {
	return SMI{Run: func(ctx context.Context, args []string) ([]byte, error) {
		out, code, err := r.Run(ctx, "nvidia-smi "+strings.Join(args, " "))
		if err != nil {
			return []byte(out), fmt.Errorf("nvidia-smi on %s: %w", name, err)
		}
		if code == 0 {
			return []byte(out), nil
		}
		msg := strings.Join(strings.Fields(out), " ")
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		if code == 127 || strings.Contains(msg, "nvidia-smi: not found") || strings.Contains(msg, "nvidia-smi: command not found") {
			return []byte(out), fmt.Errorf("%w on %s (no NVIDIA driver there?)", ErrNoSMI, name)
		}
		return []byte(out), fmt.Errorf("nvidia-smi on %s: exit status %d: %s", name, code, msg)
	}}
}
