package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/cheggaaa/pb/v3"
	"golang.org/x/term"
)

// Progress phases, shown on the bar and in --json "phase". The strings are
// part of the --json interface.
const (
	phaseInspecting       = "inspecting image"
	phaseCreatingDisk     = "creating disk"
	phaseCreatingTransfer = "creating transfer"
	phaseUploading        = "uploading"
	phaseDownloading      = "downloading"
	phaseComputing        = "computing checksum"
	phaseFlushing         = "flushing"
	phaseVerifying        = "verifying"
	phaseFinalizing       = "finalizing"
	phaseCancelling       = "cancelling"
	phaseDone             = "done"
)

// displayMode says how progress is shown.
type displayMode int

const (
	displayNone displayMode = iota // --quiet, or nothing to show
	displayText                    // phase lines on stderr (stderr is not a terminal)
	displayBar                     // a pb/v3 bar on stderr (stderr is a terminal)
	displayJSON                    // --json: one object per step on stdout
)

// chooseDisplay picks the display: JSON for --json, nothing for --quiet, a
// bar when stderr is a terminal and plain phase lines otherwise.
func chooseDisplay(stderr io.Writer, quiet, jsonOut bool) displayMode {
	switch {
	case jsonOut:
		return displayJSON
	case quiet:
		return displayNone
	case isTerminal(stderr):
		return displayBar
	default:
		return displayText
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressStep is one --json progress object.
type progressStep struct {
	Phase       string  `json:"phase"`
	Transferred int64   `json:"transferred"`
	Size        int64   `json:"size,omitempty"`
	Elapsed     float64 `json:"elapsed"`
}

// progress turns progress data from the transfer, engine and checksum code
// into a bar, phase lines or --json objects. It is the only user of pb. Its
// methods are safe for concurrent use (workers call Update).
type progress struct {
	mode   displayMode
	start  time.Time
	stdout io.Writer
	stderr *syncWriter

	// mu guards the fields that follow.
	mu      sync.Mutex
	phase   string
	done    int64
	size    int64
	lastPct int
	bar     *pb.ProgressBar
	closed  bool
}

// syncWriter serializes writes to stderr between the bar's redraws and
// other messages.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// newProgress returns a progress display writing results to stdout and
// everything else to stderr.
func newProgress(stdout, stderr io.Writer, mode displayMode) *progress {
	return &progress{
		mode:    mode,
		start:   time.Now(),
		stdout:  stdout,
		stderr:  &syncWriter{w: stderr},
		lastPct: -1,
	}
}

// elapsed returns the seconds since the command started, rounded to ms.
func (p *progress) elapsed() float64 {
	return math.Round(time.Since(p.start).Seconds()*1000) / 1000
}

// Phase starts a new phase. Data phases are followed by Update calls.
func (p *progress) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || name == p.phase {
		return
	}
	p.phase = name
	p.done, p.size = 0, 0
	p.lastPct = -1
	switch p.mode {
	case displayJSON:
		p.emitLocked()
	case displayText:
		if name != phaseDone { // the summary line says it
			fmt.Fprintf(p.stderr, "[ %6.1f ] %s\n", time.Since(p.start).Seconds(), name)
		}
	case displayBar:
		// Each phase gets its own bar, left on screen as a line when the
		// next phase starts (so rates and ETAs start afresh).
		if p.bar != nil {
			p.bar.Finish()
			p.bar = nil
		}
		if name != phaseDone { // the summary line says it
			p.startBarLocked()
		}
	}
}

// barTemplate returns the bar's look for a phase: bytes, bar, percent,
// rate and ETA while data moves; the phase and the time so far otherwise.
func barTemplate(phase string) string {
	switch phase {
	case phaseUploading, phaseDownloading, phaseComputing, phaseVerifying:
		return `{{string . "phase" | printf "%-18s"}} {{counters . }} {{bar . }} {{percent . }} {{speed . }} {{rtime . "ETA %s"}}`
	default:
		return `{{string . "phase" | printf "%-18s"}} {{etime . }}`
	}
}

// current returns the phase shown.
func (p *progress) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// Update records that done of size bytes of the current phase are done.
// size 0 means not known yet.
func (p *progress) Update(done, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.done, p.size = done, size
	switch p.mode {
	case displayJSON:
		pct := 0
		if size > 0 {
			pct = int(done * 100 / size)
		}
		if pct != p.lastPct {
			p.emitLocked()
		}
	case displayBar:
		if p.phase == phaseDone {
			return
		}
		if p.bar == nil {
			p.startBarLocked()
		}
		if size > 0 && p.bar.Total() != size {
			p.bar.SetTotal(size)
		}
		p.bar.SetCurrent(done)
	}
}

// startBarLocked starts the bar: phase, bytes, bar, percent, rate, ETA.
func (p *progress) startBarLocked() {
	p.bar = pb.New64(p.size).
		SetTemplateString(barTemplate(p.phase)).
		SetWidth(p.barWidth()).
		SetWriter(p.stderr).
		SetRefreshRate(200*time.Millisecond).
		Set(pb.Bytes, true).
		Set(pb.Terminal, true).
		Set(pb.ReturnSymbol, "\r").
		Set("phase", p.phase)
	p.bar.Start()
}

// barWidth returns the width of the terminal on stderr, bounded to
// 60..120 columns (pb would ask /dev/tty, which may not be stderr, and
// draws nothing on a terminal that reports 0 columns).
func (p *progress) barWidth() int {
	w := 100
	if f, ok := p.stderr.w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			w = cols
		}
	}
	return min(max(w, 60), 120)
}

// emitLocked writes one --json progress object.
func (p *progress) emitLocked() {
	pct := 0
	if p.size > 0 {
		pct = int(p.done * 100 / p.size)
	}
	p.lastPct = pct
	writeJSON(p.stdout, progressStep{Phase: p.phase, Transferred: p.done, Size: p.size, Elapsed: p.elapsed()})
}

// Printf writes a message line to stderr, clearing the bar's line first
// when a bar is drawn. The bar is redrawn on its next tick.
func (p *progress) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.mu.Lock()
	bar := p.mode == displayBar && p.bar != nil && !p.closed
	p.mu.Unlock()
	if bar {
		msg = "\r\x1b[K" + msg
	}
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		msg += "\n"
	}
	io.WriteString(p.stderr, msg)
}

// Close stops the bar, leaving its last state on screen. Later calls do
// nothing.
func (p *progress) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.bar != nil {
		p.bar.Finish()
	}
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding JSON output: %w", err)
	}
	data = append(data, '\n')
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
