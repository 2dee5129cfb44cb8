package cli

import (
	"context"

	"github.com/daydreamlive/scopectl/internal/library"
)

// pullCivitAI is filled in once the CivitAI client lands.
func (a *app) pullCivitAI(ctx context.Context, lib *library.Library, arg, name string) ([]pulled, error) {
	return nil, usageError("%s: not a Hugging Face reference (hf://ORG/REPO); CivitAI pulls are not available in this build", arg)
}
