package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// bar is a tqdm progress bar as ai-toolkit uses it (stderr, no ncols: a
// 10-character bar, '\r'-separated refreshes, mininterval 0.1 s, EMA rate),
// with ToolkitProgressBar's pause/unpause.
type bar struct {
	desc, postfix   string
	n, total        int
	initial         int
	lastPrintN      int
	start, lastPrnt time.Time
	emaDn, emaDt    ema
	lastLen         int
	paused          bool
	pausedAt        time.Time
	closed          bool
}

type ema struct {
	alpha, last float64
	calls       int
}

func (e *ema) add(x float64) {
	e.last = e.alpha*x + (1-e.alpha)*e.last
	e.calls++
}

func (e *ema) val() float64 {
	if e.calls == 0 {
		return 0
	}
	return e.last / (1 - math.Pow(1-e.alpha, float64(e.calls)))
}

func newBar(desc string, total, initial int, smoothing float64) *bar {
	now := time.Now()
	b := &bar{desc: desc, total: total, n: initial, initial: initial, lastPrintN: initial, start: now, lastPrnt: now,
		emaDn: ema{alpha: smoothing}, emaDt: ema{alpha: smoothing}}
	b.display()
	return b
}

func (b *bar) pause() {
	if !b.paused {
		b.paused = true
		b.pausedAt = time.Now()
	}
}

func (b *bar) unpause() {
	if b.paused {
		b.paused = false
		now := time.Now()
		b.start = b.start.Add(now.Sub(b.pausedAt))
		b.lastPrnt = now
	}
}

func (b *bar) update(dn int) {
	if b.paused || b.closed {
		return
	}
	b.n += dn
	now := time.Now()
	if now.Sub(b.lastPrnt) >= 100*time.Millisecond {
		if d := b.n - b.lastPrintN; d > 0 {
			b.emaDn.add(float64(d))
			b.emaDt.add(now.Sub(b.lastPrnt).Seconds())
		}
		b.display()
		b.lastPrintN = b.n
		b.lastPrnt = now
	}
}

// rate is format_dict["rate"]: the EMA rate in it/s, or 0 when unknown.
func (b *bar) rate() float64 {
	if b.emaDt.val() == 0 {
		return 0
	}
	return b.emaDn.val() / b.emaDt.val()
}

func (b *bar) close() {
	if b.closed {
		return
	}
	b.display()
	eprint("\n")
	b.closed = true
}

func fmtInterval(d float64) string {
	t := int(d)
	h, m, s := t/3600, t/60%60, t%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", m, s)
}

func (b *bar) line() string {
	elapsed := time.Since(b.start).Seconds()
	if b.paused {
		elapsed = b.pausedAt.Sub(b.start).Seconds()
	}
	rate := b.rate()
	if rate == 0 && elapsed > 0 {
		rate = float64(b.n-b.initial) / elapsed
	}
	rateFmt := "?it/s"
	if rate > 0 {
		if 1/rate > 1 {
			rateFmt = fmt.Sprintf("%5.2fs/it", 1/rate)
		} else {
			rateFmt = fmt.Sprintf("%5.2fit/s", rate)
		}
	}
	remaining := "?"
	if rate > 0 && b.total > 0 {
		remaining = fmtInterval(float64(b.total-b.n) / rate)
	}
	post := ""
	if b.postfix != "" {
		post = ", " + b.postfix
	}
	if b.total <= 0 {
		l := fmt.Sprintf("%dit [%s, %s%s]", b.n, fmtInterval(elapsed), rateFmt, post)
		if b.desc != "" {
			l = b.desc + ": " + l
		}
		return l
	}
	frac := float64(b.n) / float64(b.total)
	charset := []string{" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"}
	if con.ascii {
		charset = strings.Split(" 123456789#", "")
	}
	nsyms := len(charset) - 1
	const nBars = 10
	full, part := int(frac*nBars*float64(nsyms))/nsyms, int(frac*nBars*float64(nsyms))%nsyms
	barS := strings.Repeat(charset[nsyms], full)
	if full < nBars {
		barS += charset[part] + strings.Repeat(" ", nBars-full-1)
	}
	l := fmt.Sprintf("%3.0f%%|%s| %d/%d [%s<%s, %s%s]", frac*100, barS, b.n, b.total, fmtInterval(elapsed), remaining, rateFmt, post)
	if b.desc != "" {
		l = b.desc + ": " + l
	}
	return l
}

func (b *bar) display() {
	s := b.line()
	n := len([]rune(s))
	pad := ""
	if b.lastLen > n {
		pad = strings.Repeat(" ", b.lastLen-n)
	}
	b.lastLen = n
	eprint("\r" + s + pad)
}

// iterBar runs fn for each of n items under a tqdm bar that finishes and
// leaves its last line, like `for x in tqdm(...)`.
func iterBar(desc string, n int, fn func(i int)) {
	b := newBar(desc, n, 0, 0.3)
	for i := 0; i < n; i++ {
		fn(i)
		b.update(1)
	}
	b.close()
}
