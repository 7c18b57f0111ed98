package enginesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/imageio/imageio/nbdlocal"
)

// Image transfer phases (the engine's values).
const (
	phaseInitializing      = "initializing"
	phaseTransferring      = "transferring"
	phaseResuming          = "resuming"
	phasePausedSystem      = "paused_system"
	phasePausedUser        = "paused_user"
	phaseCancelledSystem   = "cancelled_system"
	phaseCancelledUser     = "cancelled_user"
	phaseFinalizingSuccess = "finalizing_success"
	phaseFinalizingFailure = "finalizing_failure"
	phaseFinalizingCleanup = "finalizing_cleanup"
	phaseFinishedSuccess   = "finished_success"
	phaseFinishedFailure   = "finished_failure"
	phaseFinishedCleanup   = "finished_cleanup"
)

// ticketTimeout is the validity of daemon tickets; the simulator renews
// them while the transfer runs, like the engine.
const ticketTimeout = 300

// transfer is an image transfer of the simulated engine. Its phases are
// driven by one goroutine (run); handlers only queue actions.
type transfer struct {
	id                string
	diskID            string
	direction         string
	format            string // "raw" (NBD backend) or "cow" (file backend)
	inactivityTimeout int
	timeoutPolicy     string
	ticket            string
	backupID          string
	bitmap            string // dirty bitmap to export (incremental backup)
	actions           chan string

	// Guarded by Sim.mu.
	phase       string
	transferURL string
	proxyURL    string
	transferred int64
	active      bool
}

func finished(phase string) bool {
	return phase == phaseFinishedSuccess || phase == phaseFinishedFailure
}

// Transfer returns the phase of the transfer id and whether it exists, for
// tests.
func (s *Sim) Transfer(id string) (phase string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.transfers[id]
	if !ok {
		return "", false
	}
	return t.phase, true
}

func (s *Sim) transferXML(t *transfer) xmlImageTransfer {
	href := apiPrefix + "/imagetransfers/" + t.id
	x := xmlImageTransfer{
		Href: href, ID: t.id,
		Active:            t.active,
		Direction:         t.direction,
		Format:            t.format,
		InactivityTimeout: t.inactivityTimeout,
		Phase:             t.phase,
		TimeoutPolicy:     t.timeoutPolicy,
		Transferred:       t.transferred,
		Host:              &xmlRef{Href: apiPrefix + "/hosts/" + s.hostID, ID: s.hostID},
		Image:             &xmlRef{ID: t.diskID},
	}
	x.Actions = &xmlActions{}
	for _, a := range []string{"resume", "cancel", "finalize", "pause", "extend"} {
		x.Actions.Links = append(x.Actions.Links, xmlLink{Href: href + "/" + a, Rel: a})
	}
	// The engine shows the URLs once the ticket is installed; clients may
	// use them only while transferring, and the simulator shows them only then.
	if t.phase == phaseTransferring {
		x.TransferURL, x.ProxyURL = t.transferURL, t.proxyURL
	}
	return x
}

// addTransfer answers POST /imagetransfers.
func (s *Sim) addTransfer(body []byte) response {
	req, err := parseTransfer(body)
	if err != nil {
		return errorResponse(err)
	}
	if req.SnapshotID != "" {
		return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. The simulator does not support snapshots.")
	}
	if req.HostID != "" && req.HostID != s.hostID {
		return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. Host does not exist.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[req.DiskID]
	if !ok {
		return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. The specified disk does not exist.")
	}
	var b *backup
	if req.BackupID != "" {
		if b, ok = s.backups[req.BackupID]; !ok {
			return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. The specified VM backup does not exist.")
		}
		if b.phase != backupReady {
			return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot transfer Virtual Disk. The VM backup is not in READY phase, backup phase is %s.", b.phase))
		}
		if req.Format == "cow" {
			return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. The specified format is not applicable for VM backup.")
		}
		if req.Direction != "download" || !contains(b.diskIDs, d.id) {
			return operationFailed(http.StatusBadRequest, "Cannot transfer Virtual Disk. The disk is not part of the VM backup.")
		}
	}
	if d.transfer != "" {
		return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot transfer Virtual Disk. Disk %s is being transferred.", d.name))
	}
	if d.status == diskLocked && (b == nil || d.backupID != b.id) {
		return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot transfer Virtual Disk: The following disks are locked: %s. Please try again in a few minutes.", d.name))
	}
	if d.status == diskIllegal && req.Direction == "download" {
		return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot transfer Virtual Disk. Disk %s is illegal.", d.name))
	}
	if s.closed {
		return operationFailed(http.StatusServiceUnavailable, "The engine is shutting down.")
	}
	t := &transfer{
		id:            newID(),
		diskID:        d.id,
		direction:     req.Direction,
		format:        firstNonEmpty(req.Format, d.format),
		timeoutPolicy: req.TimeoutPolicy,
		ticket:        newID(),
		actions:       make(chan string, 16),
		phase:         phaseInitializing,
	}
	if b != nil {
		t.backupID = b.id
		t.format = "raw"
		if b.modes[d.id] == "incremental" {
			t.bitmap = b.fromCheckpoint
		}
	}
	t.inactivityTimeout = req.InactivityTimeout
	if t.inactivityTimeout < 0 {
		t.inactivityTimeout = 60
	}
	d.transfer = t.id
	d.status = diskLocked
	s.transfers[t.id] = t
	x := s.transferXML(t)
	s.wg.Add(1)
	go s.run(t, *d)
	r := xmlResponse(http.StatusCreated, x)
	r.header = map[string]string{"Location": apiPrefix + "/imagetransfers/" + t.id}
	return r
}

func (s *Sim) getTransfer(id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.transfers[id]
	if !ok {
		return notFound()
	}
	return xmlResponse(http.StatusOK, s.transferXML(t))
}

func (s *Sim) listTransfers() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out xmlImageTransfers
	for _, id := range sortedKeys(s.transfers) {
		out.Items = append(out.Items, s.transferXML(s.transfers[id]))
	}
	return xmlResponse(http.StatusOK, out)
}

// transferAction answers POST /imagetransfers/{id}/{action}.
func (s *Sim) transferAction(id, action string) response {
	switch action {
	case "finalize", "cancel", "extend", "pause", "resume":
	default:
		return notFound()
	}
	s.mu.Lock()
	t, ok := s.transfers[id]
	if !ok {
		s.mu.Unlock()
		return notFound()
	}
	phase, dir := t.phase, t.direction
	s.mu.Unlock()
	complete := xmlResponse(http.StatusOK, xmlActionResult{Status: "complete"})
	switch {
	case action == "pause" && dir == "download":
		return operationFailed(http.StatusBadRequest, "Cannot pause image download as it's handled by the client. Note that it can be canceled if you wish to stop it.")
	case action == "resume" && phase != phasePausedSystem && phase != phasePausedUser:
		return operationFailed(http.StatusConflict, "Cannot resume image transfer as it's not in a paused state.")
	case finished(phase):
		// The engine logs and ignores phase changes out of a finished phase.
		return complete
	}
	select {
	case t.actions <- action:
	default:
		return operationFailed(http.StatusConflict, "Cannot transfer Virtual Disk: Related operation is currently in progress. Please try again later.")
	}
	return complete
}

// setPhase records a phase change.
func (s *Sim) setPhase(t *transfer, phase string) {
	s.mu.Lock()
	old := t.phase
	t.phase = phase
	if phase != phaseTransferring {
		t.active = false
	}
	s.mu.Unlock()
	if old != phase {
		s.cfg.Logf("enginesim: transfer %s: %s -> %s", t.id, old, phase)
	}
}

// session is what a transferring transfer holds on the daemons.
type session struct {
	nbd     *nbdlocal.Server
	host    bool // ticket added to the host daemon
	proxy   bool // ticket added to the proxy daemon
	renewed time.Time
}

// run drives the phases of t until it is finished and its retention time
// has passed, or the simulator closes.
func (s *Sim) run(t *transfer, d disk) {
	defer s.wg.Done()
	ctx := s.ctx
	var sess session
	defer func() { s.teardown(t, &sess) }()

	state := "init"
	initDelay := s.cfg.InitDelay + s.Faults().SlowInit
	for {
		switch state {
		case "init":
			a, ok := s.waitAction(ctx, t, initDelay)
			if !ok {
				return
			}
			if a != "" {
				state = a
				continue
			}
			if s.Faults().PausedSystem {
				s.setPhase(t, phasePausedSystem)
				state = "paused"
				continue
			}
			if err := s.startSession(ctx, t, &d, &sess); err != nil {
				s.cfg.Logf("enginesim: transfer %s: starting session: %v", t.id, err)
				s.teardown(t, &sess)
				if t.direction == "download" {
					state = "syscancel"
				} else {
					s.setPhase(t, phasePausedSystem)
					state = "paused"
				}
				continue
			}
			s.setPhase(t, phaseTransferring)
			state = "transferring"
		case "transferring":
			next, ok := s.transferring(ctx, t, &sess)
			if !ok {
				return
			}
			state = next
		case "pause":
			if t.direction == "download" {
				state = "transferring"
				continue
			}
			s.teardown(t, &sess)
			s.setPhase(t, phasePausedUser)
			state = "paused"
		case "paused":
			a, ok := s.waitAction(ctx, t, -1)
			if !ok {
				return
			}
			switch a {
			case "resume":
				s.setPhase(t, phaseResuming)
				state, initDelay = "init", s.cfg.InitDelay/2
			case "cancel", "finalize":
				state = a
			}
		case "extend":
			state = "transferring"
		case "resume":
			state = "init"
		case "finalize":
			s.finalize(ctx, t, &d, &sess)
			s.retain(ctx, t)
			return
		case "cancel":
			s.setPhase(t, phaseCancelledUser)
			s.teardown(t, &sess)
			s.setPhase(t, phaseFinalizingCleanup)
			sleep(ctx, s.cfg.FinalizeDelay/2)
			s.setPhase(t, phaseFinishedCleanup)
			s.endFailure(t, &d)
			s.retain(ctx, t)
			return
		case "syscancel":
			s.setPhase(t, phaseCancelledSystem)
			s.teardown(t, &sess)
			s.setPhase(t, phaseFinalizingFailure)
			sleep(ctx, s.cfg.FinalizeDelay/2)
			s.endFailure(t, &d)
			s.retain(ctx, t)
			return
		case "syspause":
			s.teardown(t, &sess)
			s.setPhase(t, phasePausedSystem)
			state = "paused"
		default:
			state = "transferring"
		}
	}
}

// waitAction waits up to d (forever if d < 0) for an action. It returns ""
// when d passed, and false when the simulator is closing.
func (s *Sim) waitAction(ctx context.Context, t *transfer, d time.Duration) (string, bool) {
	var timeout <-chan time.Time
	if d >= 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		timeout = tm.C
	}
	for {
		select {
		case <-ctx.Done():
			return "", false
		case <-timeout:
			return "", true
		case a := <-t.actions:
			if a == "extend" || a == "pause" && d >= 0 {
				continue // keepalive, or pause before the session exists
			}
			return a, true
		}
	}
}

// transferring watches the ticket until an action or the inactivity
// timeout ends the phase. It returns the next state.
func (s *Sim) transferring(ctx context.Context, t *transfer, sess *session) (string, bool) {
	tick := time.NewTicker(s.cfg.MonitorInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", false
		case a := <-t.actions:
			if a == "extend" {
				s.renew(ctx, t, sess, true)
				continue
			}
			if a == "resume" {
				continue
			}
			return a, true
		case <-tick.C:
			if next := s.monitor(ctx, t, sess); next != "" {
				return next, true
			}
		}
	}
}

// monitor reads the host ticket like the engine does: it updates
// transferred and active, renews the ticket, and applies the inactivity
// timeout and policy.
func (s *Sim) monitor(ctx context.Context, t *transfer, sess *session) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	raw, err := s.host.control.GetTicket(cctx, t.ticket)
	cancel()
	if err != nil {
		s.cfg.Logf("enginesim: transfer %s: reading ticket: %v", t.id, err)
		return ""
	}
	var st struct {
		Active      bool    `json:"active"`
		IdleTime    float64 `json:"idle_time"`
		Transferred int64   `json:"transferred"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		s.cfg.Logf("enginesim: transfer %s: parsing ticket status: %v", t.id, err)
		return ""
	}
	s.mu.Lock()
	t.active = st.Active
	t.transferred = st.Transferred
	s.mu.Unlock()
	s.renew(ctx, t, sess, false)
	if t.inactivityTimeout > 0 && !st.Active && st.IdleTime >= float64(t.inactivityTimeout) {
		s.cfg.Logf("enginesim: transfer %s: client inactive for %.0f s", t.id, st.IdleTime)
		switch {
		case t.timeoutPolicy == "cancel", t.timeoutPolicy == "legacy" && t.direction == "download":
			return "syscancel"
		default:
			return "syspause"
		}
	}
	return ""
}

// renew extends the tickets when half their validity has passed (or now).
func (s *Sim) renew(ctx context.Context, t *transfer, sess *session, now bool) {
	if !now && time.Since(sess.renewed) < ticketTimeout/2*time.Second {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if sess.host {
		if err := s.host.control.ModTicket(cctx, t.ticket, ticketTimeout); err != nil {
			s.cfg.Logf("enginesim: transfer %s: extending host ticket: %v", t.id, err)
		}
	}
	if sess.proxy {
		if err := s.proxy.control.ModTicket(cctx, t.ticket, ticketTimeout); err != nil {
			s.cfg.Logf("enginesim: transfer %s: extending proxy ticket: %v", t.id, err)
		}
	}
	sess.renewed = time.Now()
}

// startSession serves the disk and installs the tickets: qemu-nbd and an
// nbd: ticket for format raw, a file: ticket for format cow; the proxy
// ticket points at the host daemon.
func (s *Sim) startSession(ctx context.Context, t *transfer, d *disk, sess *session) error {
	ops := []string{"write"}
	if t.direction == "download" {
		ops = []string{"read"}
	}
	var backendURL string
	size := d.provisioned
	if t.format == "raw" {
		srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: d.path, Format: d.qemuFormat(), ReadOnly: t.direction == "download", Bitmap: t.bitmap})
		if err != nil {
			return fmt.Errorf("starting qemu-nbd: %w", err)
		}
		sess.nbd = srv
		backendURL = srv.Address().URL()
	} else {
		backendURL = "file://" + d.path
		if t.direction == "upload" && d.format == "cow" {
			// The engine's allowance for qcow2 metadata on file storage.
			size = d.provisioned + d.provisioned/10 + 64<<20
		} else if t.direction == "download" {
			if st, err := statSize(d.path); err == nil {
				size = st
			}
		}
	}
	ticket := func(url string) ([]byte, error) {
		return json.Marshal(map[string]any{
			"uuid":               t.ticket,
			"size":               size,
			"url":                url,
			"ops":                ops,
			"timeout":            ticketTimeout,
			"inactivity_timeout": max(t.inactivityTimeout, 0),
			"sparse":             d.sparse,
			"dirty":              t.bitmap != "",
			"transfer_id":        t.id,
		})
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hostTicket, err := ticket(backendURL)
	if err != nil {
		return err
	}
	if err := s.host.control.AddTicket(cctx, hostTicket); err != nil {
		return fmt.Errorf("adding host ticket: %w", err)
	}
	sess.host = true
	transferURL := s.host.url(t.ticket)
	var proxyURL string
	if s.proxy != nil {
		proxyTicket, err := ticket(transferURL)
		if err != nil {
			return err
		}
		// Like the engine, a failure to add the proxy ticket is only logged.
		if err := s.proxy.control.AddTicket(cctx, proxyTicket); err != nil {
			s.cfg.Logf("enginesim: transfer %s: adding proxy ticket: %v", t.id, err)
		} else {
			sess.proxy = true
		}
		proxyURL = s.proxy.url(t.ticket)
	}
	if s.Faults().DeadTransferURL {
		transferURL = "https://127.0.0.1:" + strconv.Itoa(s.deadPort) + "/images/" + t.ticket
	}
	sess.renewed = time.Now()
	s.mu.Lock()
	t.transferURL, t.proxyURL = transferURL, proxyURL
	s.mu.Unlock()
	return nil
}

// teardown removes the tickets and stops qemu-nbd. It is idempotent.
func (s *Sim) teardown(t *transfer, sess *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	if sess.proxy {
		if err := s.proxy.control.DelTicket(ctx, t.ticket); err != nil {
			s.cfg.Logf("enginesim: transfer %s: removing proxy ticket: %v", t.id, err)
		}
		sess.proxy = false
	}
	if sess.host {
		if err := s.host.control.DelTicket(ctx, t.ticket); err != nil {
			s.cfg.Logf("enginesim: transfer %s: removing host ticket: %v", t.id, err)
		}
		sess.host = false
	}
	if sess.nbd != nil {
		if err := sess.nbd.Stop(); err != nil {
			s.cfg.Logf("enginesim: transfer %s: stopping qemu-nbd: %v", t.id, err)
		}
		sess.nbd = nil
	}
}

// finalize ends the session and verifies an upload like the engine.
func (s *Sim) finalize(ctx context.Context, t *transfer, d *disk, sess *session) {
	s.setPhase(t, phaseFinalizingSuccess)
	s.teardown(t, sess)
	if !sleep(ctx, s.cfg.FinalizeDelay) {
		return
	}
	var verr error
	if t.direction == "upload" {
		if s.Faults().FinalizeFailure {
			verr = errors.New("finalize failure injected")
		} else {
			verr = verifyVolume(ctx, d)
		}
	}
	if verr != nil {
		s.cfg.Logf("enginesim: transfer %s: verifying disk %s: %v", t.id, d.id, verr)
		s.setPhase(t, phaseFinalizingFailure)
		s.setDisk(d.id, diskIllegal)
		sleep(ctx, s.cfg.FinalizeDelay/2)
		s.setPhase(t, phaseFinishedFailure)
		return
	}
	s.setDisk(d.id, diskOK)
	s.setPhase(t, phaseFinishedSuccess)
}

// endFailure ends a cancelled transfer: an upload's disk is removed, a
// download's disk unlocked.
func (s *Sim) endFailure(t *transfer, d *disk) {
	if t.direction == "upload" {
		s.dropDisk(d.id)
	} else {
		s.setDisk(d.id, diskOK)
	}
	s.setPhase(t, phaseFinishedFailure)
}

// setDisk sets the status of a disk and releases its transfer lock.
func (s *Sim) setDisk(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.disks[id]; ok {
		d.status = status
		d.transfer = ""
		if d.backupID != "" && status == diskOK {
			d.status = diskLocked // the backup still holds it
		}
	}
}

// retain keeps a finished transfer for Config.Retention, then removes it.
func (s *Sim) retain(ctx context.Context, t *transfer) {
	if !s.Faults().OldEngine {
		sleep(ctx, s.cfg.Retention)
	}
	s.mu.Lock()
	delete(s.transfers, t.id)
	s.mu.Unlock()
}
