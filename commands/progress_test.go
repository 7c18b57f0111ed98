package commands

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChooseDisplay(t *testing.T) {
	var buf bytes.Buffer
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cases := []struct {
		name        string
		w           any
		quiet, json bool
		want        displayMode
	}{
		{"json wins", &buf, true, true, displayJSON},
		{"quiet", &buf, true, false, displayNone},
		{"buffer is no terminal", &buf, false, false, displayText},
		{"file that is no terminal", devnull, false, false, displayText},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w = tc.w.(interface{ Write([]byte) (int, error) })
			if got := chooseDisplay(w, tc.quiet, tc.json); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestProgressJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newProgress(&out, &errOut, displayJSON)
	p.Phase(phaseCreatingDisk)
	p.Phase(phaseCreatingDisk) // same phase: nothing
	p.Phase(phaseUploading)
	const size = 1000
	for done := int64(0); done <= size; done += 5 { // 201 updates, 101 percentages
		p.Update(done, size)
	}
	p.Phase(phaseDone)
	p.Close()
	p.Update(size, size) // after Close: nothing

	var steps []progressStep
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var s progressStep
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		steps = append(steps, s)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr %q, want nothing", errOut.String())
	}
	// creating disk, uploading at 0 (phase), 1%..100%, done.
	if got, want := len(steps), 1+1+100+1; got != want {
		t.Fatalf("%d steps, want %d", got, want)
	}
	if steps[0].Phase != phaseCreatingDisk || steps[1].Phase != phaseUploading || steps[len(steps)-1].Phase != phaseDone {
		t.Errorf("phases %q, %q ... %q", steps[0].Phase, steps[1].Phase, steps[len(steps)-1].Phase)
	}
	last := steps[len(steps)-2]
	if diff := cmp.Diff(progressStep{Phase: phaseUploading, Transferred: size, Size: size}, last, cmpIgnoreElapsed); diff != "" {
		t.Errorf("last data step (-want +got):\n%s", diff)
	}
	for i := 1; i < len(steps); i++ {
		if steps[i].Elapsed < steps[i-1].Elapsed {
			t.Errorf("elapsed goes back at step %d", i)
		}
	}
}

var cmpIgnoreElapsed = cmp.Comparer(func(a, b float64) bool { return true })

func TestProgressText(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newProgress(&out, &errOut, displayText)
	p.Phase(phaseInspecting)
	p.Update(10, 100)
	p.Printf("warning: %s", "something")
	p.Phase(phaseDone)
	p.Close()
	if out.Len() != 0 {
		t.Errorf("stdout %q, want nothing", out.String())
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], phaseInspecting) || lines[1] != "warning: something" {
		t.Errorf("stderr lines %q", lines)
	}
}

// TestProgressBarConcurrent draws a bar (forced, on a buffer) while
// workers update it and messages are printed, for the race detector.
func TestProgressBarConcurrent(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newProgress(&out, &errOut, displayBar)
	p.Phase(phaseUploading)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); i < 500; i++ {
				p.Update(i, 1000)
			}
		}()
	}
	p.Printf("note")
	wg.Wait()
	p.Phase(phaseDone)
	p.Close()
	if out.Len() != 0 {
		t.Errorf("stdout %q, want nothing", out.String())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !strings.Contains(errOut.String(), "note") {
		t.Errorf("stderr %q lacks the message", errOut.String())
	}
}
