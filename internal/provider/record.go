package provider

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"time"
)

// Record is what scopectl keeps about each pod it creates (the store's pods table),
// so that a pod is never forgotten: the row is written, keyed by RequestID, before
// Create is called, and completed with the pod id when Create returns. A run that
// crashed in between finds its pod again by calling Create with the same RequestID.
type Record struct {
	RequestID      string        `json:"request_id"` // Pod.Tag; primary key
	Provider       string        `json:"provider"`   // "runpod"
	ID             string        `json:"id"`         // provider pod id; "" until Create returns
	Name           string        `json:"name"`
	GPUType        string        `json:"gpu_type,omitempty"`
	CostPerHr      float64       `json:"cost_per_hr,omitempty"`
	CreatedAt      time.Time     `json:"created_at"`       // when scopectl asked for the pod
	IdleStop       time.Duration `json:"idle_stop"`        // stop after this long idle; 0 = never
	MaxHours       float64       `json:"max_hours"`        // stop/terminate after this long; 0 = no limit
	LastSeenStatus string        `json:"last_seen_status"` // Pod.Status at LastSeenAt; "CREATING" before Create returned
	LastSeenAt     *time.Time    `json:"last_seen_at,omitempty"`
	TerminatedAt   *time.Time    `json:"terminated_at,omitempty"`
}

// StatusCreating is Record.LastSeenStatus between writing the record and Create
// returning: a record left in this state after a crash may or may not have a pod.
const StatusCreating = "CREATING"

var requestIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewRequestID returns a fresh request id: "sc" and 16 random lowercase base32
// characters (80 bits), e.g. "sc4kq2m7w9x3b5n6p8".
func NewRequestID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("provider: no randomness: " + err.Error())
	}
	return "sc" + strings.ToLower(requestIDEncoding.EncodeToString(b[:]))
}
