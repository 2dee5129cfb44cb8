package cli

import "github.com/daydreamlive/scopectl/internal/progress"

// reporter is a.progress() that always has somewhere to write: without a terminal or
// --json it draws no bars, but a retry still shows as one line on stderr (a retry must
// never pass silently; with --json it is an NDJSON "retry" event).
func (a *app) reporter() progress.Reporter {
	r := a.progress()
	r.W = a.stderr
	return r
}
