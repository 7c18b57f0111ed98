package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals from the issues, checked against the medians.
const (
	goalHTTPSRatio  = 1.25     // HTTPS upload/download time over qemu-img convert
	goalUnixRatio   = 1.10     // Unix socket upload/download time over qemu-img convert
	goalDaemonCPU   = 0.5      // daemon CPU seconds per GiB of data over HTTPS
	goalRSS         = 48 << 20 // client and daemon peak RSS
	goalFlatRSSSlop = 4 << 20  // how much more the sparse image may take
)

// row is the medians of one scenario on one image.
type row struct {
	Image    string `json:"image"`
	Scenario string `json:"scenario"`
	Runs     int    `json:"runs"` // successful runs the medians are over
	// Ratio is Wall over qemu-img convert's on the same image (0 if unknown).
	Ratio          float64 `json:"ratio_to_convert"`
	Wall           float64 `json:"wall_s"`
	DataGiBps      float64 `json:"data_gib_per_s"`
	ClientCPU      float64 `json:"client_cpu_s"`
	ClientChildCPU float64 `json:"client_child_cpu_s"`
	DaemonCPU      float64 `json:"daemon_cpu_s"`
	// DaemonCPUPerGiB is daemon CPU seconds per GiB of image data.
	DaemonCPUPerGiB float64 `json:"daemon_cpu_s_per_data_gib"`
	ServerCPU       float64 `json:"server_cpu_s"`
	TotalCPU        float64 `json:"total_cpu_s"`
	ClientRSS       int64   `json:"client_rss"`
	ClientTreeRSS   int64   `json:"client_tree_rss"`
	DaemonRSS       int64   `json:"daemon_rss"`
	// OtherLoad is the percentage of the machine's CPU time (all CPUs)
	// that other work used during the run: the machine's busy time less
	// the scenario's own processes; -1 when unknown.
	OtherLoad float64 `json:"other_load_pct"`
	IOWait    float64 `json:"io_wait_pct"`
	Verified  bool    `json:"verified"`
	// Note says why a row has no numbers ("skipped: ..." or "error: ...").
	Note string `json:"note,omitempty"`

	daemon bool
}

// goal is one target of the issues and whether the run met it.
type goal struct {
	What string `json:"what"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// report is everything a run produced.
type report struct {
	Date    string            `json:"date"`
	Command string            `json:"command"`
	Host    map[string]string `json:"host"`
	Images  []*image          `json:"images"`
	Rows    []row             `json:"rows"`
	Goals   []goal            `json:"goals"`
	Results []result          `json:"results"`
	// FloorSize is the bytes each floor moved; Floors the medians of the
	// floors, DaemonFloors the sums of floors that bound imageiod's data
	// paths, FloorResults every run.
	FloorSize    int64         `json:"floor_size,omitempty"`
	Floors       []floorRow    `json:"floors,omitempty"`
	DaemonFloors []daemonFloor `json:"daemon_floors,omitempty"`
	FloorResults []floorResult `json:"floor_results,omitempty"`
}

func newReport(cfg config, images []*image, results []result) *report {
	r := &report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(cfg),
		Host:    hostInfo(),
		Images:  images,
		Results: results,
	}
	for _, im := range images {
		var convert float64
		for _, sc := range scenarios {
			var runs []result
			note := ""
			for _, res := range results {
				if res.Image != im.Label || res.Scenario != sc.Name {
					continue
				}
				switch {
				case res.Skipped != "":
					note = "skipped: " + res.Skipped
				case res.Error != "":
					note = "error: " + firstLine(res.Error)
				default:
					runs = append(runs, res)
				}
			}
			if len(runs) == 0 && note == "" {
				continue // not selected
			}
			w := row{Image: im.Label, Scenario: sc.Name, Runs: len(runs), daemon: sc.Daemon}
			if len(runs) > 0 {
				note = "" // some runs worked; errors are in the JSON
				w.fill(runs, im.DataGiB())
			}
			w.Note = note
			if sc.Name == scConvert && w.Runs > 0 {
				convert = w.Wall
			}
			if convert > 0 && w.Runs > 0 {
				w.Ratio = w.Wall / convert
			}
			r.Rows = append(r.Rows, w)
		}
	}
	r.Goals = r.checkGoals()
	return r
}

// fill sets the row to the medians of runs.
func (w *row) fill(runs []result, dataGiB float64) {
	f := func(get func(result) float64) float64 {
		v := make([]float64, len(runs))
		for i, res := range runs {
			v[i] = get(res)
		}
		return median(v)
	}
	w.Wall = f(func(r result) float64 { return r.Wall })
	w.ClientCPU = f(func(r result) float64 { return r.ClientCPU })
	w.ClientChildCPU = f(func(r result) float64 { return r.ClientChildCPU })
	w.DaemonCPU = f(func(r result) float64 { return r.DaemonCPU })
	w.ServerCPU = f(func(r result) float64 { return r.ServerCPU })
	w.TotalCPU = f(func(r result) float64 { return r.ClientCPU + r.ClientChildCPU + r.DaemonCPU + r.ServerCPU })
	w.ClientRSS = int64(f(func(r result) float64 { return float64(r.ClientRSS) }))
	w.ClientTreeRSS = int64(f(func(r result) float64 { return float64(r.ClientTreeRSS) }))
	w.DaemonRSS = int64(f(func(r result) float64 { return float64(r.DaemonRSS) }))
	w.OtherLoad = f(func(r result) float64 {
		if r.MachineCPU < 0 || r.Wall <= 0 {
			return -1
		}
		own := r.ClientCPU + r.ClientChildCPU + r.DaemonCPU + r.ServerCPU
		return max(0, 100*(r.MachineCPU-own)/(r.Wall*float64(runtime.NumCPU())))
	})
	w.IOWait = f(func(r result) float64 { return r.IOWait })
	if w.Wall > 0 {
		w.DataGiBps = dataGiB / w.Wall
	}
	if dataGiB > 0 {
		w.DaemonCPUPerGiB = w.DaemonCPU / dataGiB
	}
	w.Verified = true
	for _, res := range runs {
		w.Verified = w.Verified && res.Verified
	}
}

// median of v; v is reordered.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// find returns the row of a scenario on an image.
func (r *report) find(image, scenario string) (row, bool) {
	for _, w := range r.Rows {
		if w.Image == image && w.Scenario == scenario && w.Runs > 0 {
			return w, true
		}
	}
	return row{}, false
}

// roundRatios returns, for each run of scenario on image that worked and
// whose round's qemu-img convert worked, its wall time over that
// convert's, in run order. The host's speed drifts between rounds; a
// ratio within one round shows how often a goal holds.
func (r *report) roundRatios(image, scenario string) []float64 {
	convert := map[int]float64{}
	for _, res := range r.Results {
		if res.Image == image && res.Scenario == scConvert && res.ok() {
			convert[res.Run] = res.Wall
		}
	}
	var out []float64
	for _, res := range r.Results {
		if res.Image == image && res.Scenario == scenario && res.ok() && convert[res.Run] > 0 {
			out = append(out, res.Wall/convert[res.Run])
		}
	}
	return out
}

// checkGoals compares the medians with the goals of the issues.
func (r *report) checkGoals() []goal {
	if len(r.Images) == 0 {
		return nil
	}
	main := r.Images[0].Label
	var goals []goal
	for _, g := range []struct {
		sc  string
		max float64
	}{{scUploadTLS, goalHTTPSRatio}, {scDownloadTLS, goalHTTPSRatio}, {scUploadUnix, goalUnixRatio}, {scDownUnix, goalUnixRatio}} {
		if w, ok := r.find(main, g.sc); ok && w.Ratio > 0 {
			got := fmt.Sprintf("%.2fx", w.Ratio)
			if rr := r.roundRatios(main, g.sc); len(rr) > 1 {
				met := 0
				var each []string
				for _, x := range rr {
					each = append(each, fmt.Sprintf("%.2f", x))
					if x <= g.max {
						met++
					}
				}
				got += fmt.Sprintf(" (each round against its own convert: %s; within the goal in %d of %d)",
					strings.Join(each, " "), met, len(rr))
			}
			goals = append(goals, goal{What: g.sc + " time / qemu-img convert (" + main + ")",
				Want: fmt.Sprintf("<= %.2fx", g.max), Got: got, Met: w.Ratio <= g.max})
		}
	}
	for _, sc := range []string{scUploadTLS, scDownloadTLS} {
		if w, ok := r.find(main, sc); ok {
			goals = append(goals, goal{What: "imageiod CPU per data GiB, " + sc + " (" + main + ")",
				Want: fmt.Sprintf("<= %.1f s", goalDaemonCPU), Got: fmt.Sprintf("%.2f s", w.DaemonCPUPerGiB),
				Met: w.DaemonCPUPerGiB <= goalDaemonCPU})
		}
	}
	if w, ok := r.find(main, scNBDClient); ok {
		if n, ok := r.find(main, scNBDCopy); ok {
			goals = append(goals, goal{What: "imageio NBD client copy time / nbdcopy (" + main + ")",
				Want: "<= 1.00x", Got: fmt.Sprintf("%.2fx", w.Wall/n.Wall), Met: w.Wall <= n.Wall})
		}
	}
	var clientRSS, daemonRSS int64
	for _, w := range r.Rows {
		if w.daemon && w.Runs > 0 {
			clientRSS, daemonRSS = max(clientRSS, w.ClientRSS), max(daemonRSS, w.DaemonRSS)
		}
	}
	if clientRSS > 0 {
		goals = append(goals,
			goal{What: "imageio client peak RSS (largest of all daemon scenarios)", Want: "< 48 MiB",
				Got: mib(clientRSS), Met: clientRSS < goalRSS},
			goal{What: "imageiod peak RSS (largest of all daemon scenarios)", Want: "< 48 MiB",
				Got: mib(daemonRSS), Met: daemonRSS < goalRSS})
	}
	if len(r.Images) > 1 {
		big := r.Images[1].Label
		for _, sc := range scenarios {
			if !sc.Daemon {
				continue
			}
			a, ok1 := r.find(main, sc.Name)
			b, ok2 := r.find(big, sc.Name)
			if !ok1 || !ok2 {
				continue
			}
			goals = append(goals, goal{What: "peak RSS flat, " + sc.Name + " (client / daemon)",
				Want: fmt.Sprintf("%s within %s of %s", big, mib(goalFlatRSSSlop), main),
				Got:  fmt.Sprintf("%s: %s / %s; %s: %s / %s", main, mib(a.ClientRSS), mib(a.DaemonRSS), big, mib(b.ClientRSS), mib(b.DaemonRSS)),
				Met:  b.ClientRSS <= a.ClientRSS+goalFlatRSSSlop && b.DaemonRSS <= a.DaemonRSS+goalFlatRSSSlop})
		}
	}
	return goals
}

// commandLine is the command that reproduces the run.
func commandLine(cfg config) string {
	parts := []string{"BENCH_SIZE=" + formatSize(cfg.Size), "BENCH_SPARSE_SIZE=" + formatSize(cfg.SparseSize),
		fmt.Sprintf("BENCH_RUNS=%d", cfg.Runs), "BENCH_FLOOR_SIZE=" + formatSize(cfg.FloorSize)}
	if cfg.Only != nil {
		parts = append(parts, fmt.Sprintf("BENCH_ONLY='%s'", cfg.Only))
	}
	if cfg.Seed != 1 {
		parts = append(parts, fmt.Sprintf("BENCH_SEED=%d", cfg.Seed))
	}
	return strings.Join(append(parts, "make bench"), " ")
}

// hostInfo describes the machine and the tools' versions.
func hostInfo() map[string]string {
	info := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				info["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		info["memory"] = strings.Join(strings.Fields(firstLine(string(b)))[1:], " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		info["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		info["load at end"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	for _, res := range []string{"cpu", "io"} {
		if b, err := os.ReadFile("/proc/pressure/" + res); err == nil {
			// "some avg10=.. avg60=.. avg300=.. total=..": the share of
			// time some task waited for the resource.
			if f := strings.Fields(firstLine(string(b))); len(f) >= 4 {
				info[res+" pressure at end"] = strings.Join(f[1:4], " ")
			}
		}
	}
	for _, tool := range []string{"qemu-img", "nbdcopy"} {
		if out, err := exec.Command(tool, "--version").Output(); err == nil {
			info[tool] = firstLine(string(out))
		}
	}
	return info
}

var columns = []string{"image", "scenario", "wall s", "x convert", "data GiB/s", "client CPU s", "client qemu-nbd CPU s",
	"daemon CPU s", "daemon CPU s/GiB", "servers CPU s", "total CPU s", "client RSS MiB", "daemon RSS MiB", "other load %", "IO wait %", "verified"}

// cells formats a row for the tables.
func (w row) cells() []string {
	if w.Runs == 0 {
		return []string{w.Image, w.Scenario, w.Note}
	}
	dash := func(v float64, format string) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	daemonOnly := func(v float64, format string) string {
		if !w.daemon {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	rss := func(n int64) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", float64(n)/(1<<20))
	}
	pct := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", v)
	}
	verified := "no"
	if w.Verified {
		verified = "yes"
	}
	return []string{w.Image, w.Scenario, fmt.Sprintf("%.2f", w.Wall), dash(w.Ratio, "%.2f"), dash(w.DataGiBps, "%.2f"),
		fmt.Sprintf("%.2f", w.ClientCPU), dash(w.ClientChildCPU, "%.2f"), daemonOnly(w.DaemonCPU, "%.2f"),
		daemonOnly(w.DaemonCPUPerGiB, "%.2f"), dash(w.ServerCPU, "%.2f"), fmt.Sprintf("%.2f", w.TotalCPU),
		rss(w.ClientRSS), func() string {
			if !w.daemon {
				return "-"
			}
			return rss(w.DaemonRSS)
		}(), pct(w.OtherLoad), pct(w.IOWait), verified}
}

// Text writes the table and the goals for a terminal.
func (r *report) Text(out io.Writer) {
	fmt.Fprintf(out, "\n%s (%s; medians of runs)\n", r.Command, r.Date)
	for _, im := range r.Images {
		fmt.Fprintf(out, "image %s: %.2f GiB data, %.2f GiB zero clusters, %.2f GiB holes\n",
			im.Label, gib(im.Stats.Data), gib(im.Stats.Zero), gib(im.Stats.Hole))
	}
	if len(r.Rows) > 0 {
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(columns, "\t"))
		for _, w := range r.Rows {
			fmt.Fprintln(tw, strings.Join(w.cells(), "\t"))
		}
		_ = tw.Flush()
	}
	r.floorsText(out)
	if len(r.Goals) > 0 {
		fmt.Fprintln(out, "\ngoals:")
		for _, g := range r.Goals {
			mark := "MISSED"
			if g.Met {
				mark = "met"
			}
			fmt.Fprintf(out, "  %-6s %s: %s (want %s)\n", mark, g.What, g.Got, g.Want)
		}
	}
}

// Markdown writes the table and the goals as Markdown.
func (r *report) Markdown(out io.Writer) {
	fmt.Fprintf(out, "Command: `%s` (%s)\n\n", r.Command, r.Date)
	keys := make([]string, 0, len(r.Host))
	for k := range r.Host {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprint(out, "Host:")
	for _, k := range keys {
		fmt.Fprintf(out, " %s: %s;", k, r.Host[k])
	}
	fmt.Fprint(out, "\n\n")
	for _, im := range r.Images {
		fmt.Fprintf(out, "- image %s: %.2f GiB data, %.2f GiB zero clusters, %.2f GiB holes\n",
			im.Label, gib(im.Stats.Data), gib(im.Stats.Zero), gib(im.Stats.Hole))
	}
	if len(r.Rows) > 0 {
		fmt.Fprintf(out, "\n| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
		for _, w := range r.Rows {
			c := w.cells()
			for len(c) < len(columns) {
				c = append(c, "")
			}
			fmt.Fprintf(out, "| %s |\n", strings.Join(c, " | "))
		}
	}
	r.floorsMarkdown(out)
	if len(r.Goals) > 0 {
		fmt.Fprint(out, "\n| goal | want | got | met |\n|---|---|---|---|\n")
		for _, g := range r.Goals {
			met := "no"
			if g.Met {
				met = "yes"
			}
			fmt.Fprintf(out, "| %s | %s | %s | %s |\n", g.What, g.Want, g.Got, met)
		}
	}
}

// Save writes results.json and results.md into dir.
func (r *report) Save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	r.Markdown(&md)
	return os.WriteFile(filepath.Join(dir, "results.md"), md.Bytes(), 0o644)
}

// floorRow is the medians of one floor's runs.
type floorRow struct {
	Floor string `json:"floor"`
	Runs  int    `json:"runs"` // successful runs the medians are over
	// CPUPerGiB is the measured process's CPU seconds per GiB moved, Min
	// and Max the range over the runs; SystemPerGiB the system (kernel)
	// part of it.
	CPUPerGiB    float64 `json:"cpu_s_per_gib"`
	MinPerGiB    float64 `json:"min_cpu_s_per_gib"`
	MaxPerGiB    float64 `json:"max_cpu_s_per_gib"`
	SystemPerGiB float64 `json:"system_s_per_gib"`
	GiBps        float64 `json:"gib_per_s"`
	// PeerCPUPerGiB is the other end's CPU seconds per GiB (sockets).
	PeerCPUPerGiB float64 `json:"peer_cpu_s_per_gib,omitempty"`
	TLS           string  `json:"tls,omitempty"`
	// OtherLoad is as in row; -1 when unknown.
	OtherLoad float64 `json:"other_load_pct"`
	Note      string  `json:"note,omitempty"`
}

// daemonFloor is the least CPU imageiod can spend per GiB on one data
// path: the sum of the floors the path is made of.
type daemonFloor struct {
	Path string `json:"path"`
	// Parts are the floors summed: for each step of the path the one
	// with the lowest median of its alternatives.
	Parts []string `json:"parts"`
	// Floor is the sum of the parts' medians, Min and Max the sums of
	// their minimums and maximums, in CPU seconds per GiB.
	Floor float64 `json:"floor_cpu_s_per_gib"`
	Min   float64 `json:"min_cpu_s_per_gib"`
	Max   float64 `json:"max_cpu_s_per_gib"`
	// Goal is the goal of issue 3 (HTTPS paths only).
	Goal     float64 `json:"goal_cpu_s_per_gib,omitempty"`
	Scenario string  `json:"scenario"`
	// Imageiod is the daemon CPU seconds per data GiB of Scenario on
	// Image in the same run; absent when the scenario did not run.
	Image    string  `json:"image,omitempty"`
	Imageiod float64 `json:"imageiod_cpu_s_per_data_gib,omitempty"`
}

// daemonPaths are imageiod's data paths in the benchmark: it reads the
// body from the client and writes it to qemu-nbd over a Unix socket
// (upload), or the other way round (download). Each step lists the floors
// that can do it; the cheapest counts.
var daemonPaths = []struct {
	path     string
	steps    [][]string
	scenario string
	goal     float64
}{
	{"HTTPS upload", [][]string{{flTLSReceive, flTLSReceiveB}, {flUnixSend}}, scUploadTLS, goalDaemonCPU},
	{"HTTPS download", [][]string{{flUnixReceive}, {flTLSSend, flTLSSendB}}, scDownloadTLS, goalDaemonCPU},
	{"Unix socket upload", [][]string{{flUnixReceive}, {flUnixSend}}, scUploadUnix, 0},
	{"Unix socket download", [][]string{{flUnixReceive}, {flUnixSend}}, scDownUnix, 0},
}

// addFloors adds the floors' medians and the daemon floors to the report.
// Call it after newReport, which makes the scenario rows.
func (r *report) addFloors(cfg config, results []floorResult) {
	if len(results) == 0 {
		return
	}
	r.FloorSize, r.FloorResults = cfg.FloorSize, results
	rows := map[string]floorRow{}
	for _, fl := range floors {
		var runs []floorResult
		note := ""
		for _, res := range results {
			switch {
			case res.Floor != fl.Name:
			case res.Error != "":
				note = "error: " + firstLine(res.Error)
			default:
				runs = append(runs, res)
			}
		}
		if len(runs) == 0 && note == "" {
			continue // not selected
		}
		w := floorRow{Floor: fl.Name, Runs: len(runs), Note: note}
		if len(runs) > 0 {
			w.Note = "" // some runs worked; errors are in the JSON
			w.fillFloor(runs)
		}
		rows[fl.Name] = w
		r.Floors = append(r.Floors, w)
	}
	var main string
	if len(r.Images) > 0 {
		main = r.Images[0].Label
	}
	for _, p := range daemonPaths {
		d := daemonFloor{Path: p.path, Goal: p.goal, Scenario: p.scenario}
		complete := true
		for _, step := range p.steps {
			var w floorRow
			for _, name := range step {
				if alt, ok := rows[name]; ok && alt.Runs > 0 && (w.Runs == 0 || alt.CPUPerGiB < w.CPUPerGiB) {
					w = alt
				}
			}
			if w.Runs == 0 {
				complete = false
				break
			}
			d.Parts = append(d.Parts, w.Floor)
			d.Floor += w.CPUPerGiB
			d.Min += w.MinPerGiB
			d.Max += w.MaxPerGiB
		}
		if !complete {
			continue
		}
		if w, ok := r.find(main, p.scenario); ok && w.DaemonCPUPerGiB > 0 {
			d.Image, d.Imageiod = main, w.DaemonCPUPerGiB
		}
		r.DaemonFloors = append(r.DaemonFloors, d)
	}
}

// fillFloor sets the row to the medians of runs.
func (w *floorRow) fillFloor(runs []floorResult) {
	per := make([]float64, len(runs))
	f := func(get func(floorResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, res := range runs {
			v[i] = get(res)
		}
		return median(v)
	}
	for i, res := range runs {
		per[i] = res.PerGiB()
	}
	w.CPUPerGiB = median(per) // sorts per
	w.MinPerGiB, w.MaxPerGiB = per[0], per[len(per)-1]
	w.SystemPerGiB = f(func(r floorResult) float64 { return r.System / gib(r.Bytes) })
	w.GiBps = f(func(r floorResult) float64 {
		if r.Wall <= 0 {
			return 0
		}
		return gib(r.Bytes) / r.Wall
	})
	w.PeerCPUPerGiB = f(func(r floorResult) float64 { return r.PeerCPU / gib(r.Bytes) })
	w.TLS = runs[0].TLS
	w.OtherLoad = f(func(r floorResult) float64 { return r.OtherLoad })
}

// floorName is a floor's name without the "floor " prefix.
func floorName(name string) string { return strings.TrimPrefix(name, "floor ") }

func floorNames(names []string) string {
	short := make([]string, len(names))
	for i, n := range names {
		short[i] = floorName(n)
	}
	return strings.Join(short, " + ")
}

var floorColumns = []string{"floor", "CPU s/GiB", "min-max", "system s/GiB", "GiB/s", "peer CPU s/GiB", "other load %"}

func (w floorRow) cells() []string {
	if w.Runs == 0 {
		return []string{floorName(w.Floor), w.Note}
	}
	peer := "-"
	if w.PeerCPUPerGiB > 0 {
		peer = fmt.Sprintf("%.3f", w.PeerCPUPerGiB)
	}
	load := "-"
	if w.OtherLoad >= 0 {
		load = fmt.Sprintf("%.0f", w.OtherLoad)
	}
	return []string{floorName(w.Floor), fmt.Sprintf("%.3f", w.CPUPerGiB), fmt.Sprintf("%.3f-%.3f", w.MinPerGiB, w.MaxPerGiB),
		fmt.Sprintf("%.3f", w.SystemPerGiB), fmt.Sprintf("%.2f", w.GiBps), peer, load}
}

var daemonFloorColumns = []string{"imageiod path", "floor CPU s/GiB", "min-max", "goal", "imageiod CPU s/data GiB", "sum of"}

func (d daemonFloor) cells() []string {
	goal, measured := "-", "-"
	if d.Goal > 0 {
		goal = fmt.Sprintf("%.2f", d.Goal)
	}
	if d.Imageiod > 0 {
		measured = fmt.Sprintf("%.2f (%s)", d.Imageiod, d.Image)
	}
	return []string{d.Path, fmt.Sprintf("%.3f", d.Floor), fmt.Sprintf("%.3f-%.3f", d.Min, d.Max), goal, measured,
		floorNames(d.Parts)}
}

// floorsHeading says what the floors tables are.
func (r *report) floorsHeading() string {
	runs := 0
	for _, w := range r.Floors {
		runs = max(runs, w.Runs)
	}
	tls := ""
	for _, w := range r.Floors {
		if w.TLS != "" {
			tls = "; TLS: " + w.TLS
			break
		}
	}
	return fmt.Sprintf("floors: %s moved per floor between two processes on loopback; CPU of the measured process only "+
		"(the TLS server for tls), medians of %d runs%s", formatSize(r.FloorSize), runs, tls)
}

const daemonFloorsHeading = "imageiod floors: the cheapest floor of each step of its data path, added up, next to the goal and imageiod's CPU in this run"

// floorsText writes the floors tables for a terminal.
func (r *report) floorsText(out io.Writer) {
	if len(r.Floors) == 0 {
		return
	}
	fmt.Fprintf(out, "\n%s\n\n", r.floorsHeading())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(floorColumns, "\t"))
	for _, w := range r.Floors {
		fmt.Fprintln(tw, strings.Join(w.cells(), "\t"))
	}
	_ = tw.Flush()
	if len(r.DaemonFloors) == 0 {
		return
	}
	fmt.Fprintf(out, "\n%s\n\n", daemonFloorsHeading)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(daemonFloorColumns, "\t"))
	for _, d := range r.DaemonFloors {
		fmt.Fprintln(tw, strings.Join(d.cells(), "\t"))
	}
	_ = tw.Flush()
}

// floorsMarkdown writes the floors tables as Markdown.
func (r *report) floorsMarkdown(out io.Writer) {
	if len(r.Floors) == 0 {
		return
	}
	table := func(columns []string, rows [][]string) {
		fmt.Fprintf(out, "| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
		for _, c := range rows {
			for len(c) < len(columns) {
				c = append(c, "")
			}
			fmt.Fprintf(out, "| %s |\n", strings.Join(c, " | "))
		}
	}
	fmt.Fprintf(out, "\n%s.\n\n", r.floorsHeading())
	var rows [][]string
	for _, w := range r.Floors {
		rows = append(rows, w.cells())
	}
	table(floorColumns, rows)
	if len(r.DaemonFloors) == 0 {
		return
	}
	fmt.Fprintf(out, "\n%s.\n\n", daemonFloorsHeading)
	rows = nil
	for _, d := range r.DaemonFloors {
		rows = append(rows, d.cells())
	}
	table(daemonFloorColumns, rows)
}
