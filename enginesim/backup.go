package enginesim

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// Backup phases (the API's values).
const (
	backupStarting   = "starting"
	backupReady      = "ready"
	backupFinalizing = "finalizing"
	backupSucceeded  = "succeeded"
	backupFailed     = "failed"
)

// backup is an incremental or full VM backup. VMs are implicit: any VM id
// in a path is accepted, and its disks are the ones named in the backup.
type backup struct {
	id, vmID       string
	description    string
	diskIDs        []string
	fromCheckpoint string
	toCheckpoint   string
	modes          map[string]string // disk id -> "incremental" or "full"
	phase          string
	created        time.Time
	modified       time.Time
}

// checkpoint is a VM checkpoint: a bitmap named by its id in each of its
// disks' qcow2 volumes.
type checkpoint struct {
	id, parentID, vmID string
	diskIDs            []string
	created            time.Time
}

type xmlBackupIn struct {
	XMLName        xml.Name `xml:"backup"`
	ID             string   `xml:"id,attr"`
	Description    string   `xml:"description"`
	FromCheckpoint string   `xml:"from_checkpoint_id"`
	Disks          struct {
		Items []xmlRef `xml:"disk"`
	} `xml:"disks"`
}

type xmlBackup struct {
	XMLName          xml.Name  `xml:"backup"`
	Href             string    `xml:"href,attr"`
	ID               string    `xml:"id,attr"`
	Links            []xmlLink `xml:"link"`
	CreationDate     string    `xml:"creation_date"`
	Description      string    `xml:"description,omitempty"`
	FromCheckpointID string    `xml:"from_checkpoint_id,omitempty"`
	ModificationDate string    `xml:"modification_date"`
	Phase            string    `xml:"phase"`
	ToCheckpointID   string    `xml:"to_checkpoint_id,omitempty"`
	Host             xmlRef    `xml:"host"`
	VM               xmlRef    `xml:"vm"`
}

type xmlCheckpoint struct {
	XMLName      xml.Name  `xml:"checkpoint"`
	Href         string    `xml:"href,attr"`
	ID           string    `xml:"id,attr"`
	Links        []xmlLink `xml:"link"`
	CreationDate string    `xml:"creation_date"`
	ParentID     string    `xml:"parent_id,omitempty"`
	State        string    `xml:"state"`
	VM           xmlRef    `xml:"vm"`
}

type xmlCheckpoints struct {
	XMLName xml.Name        `xml:"checkpoints"`
	Items   []xmlCheckpoint `xml:"checkpoint"`
}

// parseBackup reads a POST /vms/{id}/backups body.
func parseBackup(body []byte) (xmlBackupIn, error) {
	var in xmlBackupIn
	if err := xml.Unmarshal(body, &in); err != nil {
		return in, badRequest("parsing backup: %v", err)
	}
	if len(in.Disks.Items) == 0 {
		return in, badRequest("backup [disks] required")
	}
	for _, d := range in.Disks.Items {
		if d.ID == "" {
			return in, badRequest("backup disk id required")
		}
	}
	in.FromCheckpoint = strings.TrimSpace(in.FromCheckpoint)
	return in, nil
}

// routeVM answers /vms/{vm}/backups... and /vms/{vm}/checkpoints...
func (s *Sim) routeVM(method string, parts []string, body []byte) response {
	vm := parts[1]
	rest := parts[2:]
	switch {
	case len(rest) == 1 && rest[0] == "backups" && method == http.MethodPost:
		return s.addBackup(vm, body)
	case len(rest) == 1 && rest[0] == "backups" && method == http.MethodGet:
		return s.listBackups(vm)
	case len(rest) == 2 && rest[0] == "backups" && method == http.MethodGet:
		return s.getBackup(vm, rest[1])
	case len(rest) == 3 && rest[0] == "backups" && rest[2] == "disks" && method == http.MethodGet:
		return s.backupDisks(vm, rest[1])
	case len(rest) == 3 && rest[0] == "backups" && rest[2] == "finalize" && method == http.MethodPost:
		return s.finalizeBackup(vm, rest[1])
	case len(rest) == 1 && rest[0] == "checkpoints" && method == http.MethodGet:
		return s.listCheckpoints(vm)
	case len(rest) == 2 && rest[0] == "checkpoints" && method == http.MethodGet:
		return s.getCheckpoint(vm, rest[1])
	case len(rest) == 2 && rest[0] == "checkpoints" && method == http.MethodDelete:
		return s.removeCheckpoint(vm, rest[1])
	}
	return notFound()
}

func (s *Sim) backupXML(b *backup) xmlBackup {
	href := apiPrefix + "/vms/" + b.vmID + "/backups/" + b.id
	x := xmlBackup{
		Href: href, ID: b.id,
		Links:            []xmlLink{{Href: href + "/disks", Rel: "disks"}},
		CreationDate:     b.created.Format(time.RFC3339Nano),
		Description:      b.description,
		FromCheckpointID: b.fromCheckpoint,
		ModificationDate: b.modified.Format(time.RFC3339Nano),
		Phase:            b.phase,
		Host:             xmlRef{Href: apiPrefix + "/hosts/" + s.hostID, ID: s.hostID},
		VM:               xmlRef{Href: apiPrefix + "/vms/" + b.vmID, ID: b.vmID},
	}
	if b.phase != backupStarting {
		x.ToCheckpointID = b.toCheckpoint
	}
	return x
}

func (s *Sim) setBackupPhase(b *backup, phase string) {
	s.mu.Lock()
	b.phase = phase
	b.modified = time.Now()
	s.mu.Unlock()
	s.cfg.Logf("enginesim: backup %s: %s", b.id, phase)
}

// addBackup answers POST /vms/{vm}/backups: the backup is starting, then
// ready once a bitmap named by the new checkpoint is in every qcow2 disk.
func (s *Sim) addBackup(vm string, body []byte) response {
	in, err := parseBackup(body)
	if err != nil {
		return errorResponse(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.backups {
		if b.vmID == vm && b.phase != backupSucceeded && b.phase != backupFailed {
			return operationFailed(http.StatusConflict, "Cannot backup VM. The VM backup operation is currently in progress.")
		}
	}
	var from *checkpoint
	if in.FromCheckpoint != "" {
		for _, c := range s.checkpoints[vm] {
			if c.id == in.FromCheckpoint {
				from = c
			}
		}
		if from == nil {
			return operationFailed(http.StatusBadRequest, fmt.Sprintf("Cannot backup VM. Checkpoint ID %s doesn't exist.", in.FromCheckpoint))
		}
	}
	b := &backup{
		id: firstNonEmpty(in.ID, newID()), vmID: vm, description: in.Description,
		fromCheckpoint: in.FromCheckpoint, toCheckpoint: newID(),
		modes: map[string]string{}, phase: backupStarting, created: time.Now(),
	}
	b.modified = b.created
	if _, ok := s.backups[b.id]; ok || !validID(b.id) {
		return errorResponse(badRequest("invalid or existing backup id %q", b.id))
	}
	for _, ref := range in.Disks.Items {
		d, ok := s.disks[ref.ID]
		if !ok {
			return operationFailed(http.StatusBadRequest, "Cannot backup VM. The specified disk does not exist.")
		}
		if d.status != diskOK {
			return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot backup VM: The following disks are locked: %s. Please try again in a few minutes.", d.name))
		}
		b.diskIDs = append(b.diskIDs, d.id)
		b.modes[d.id] = "full"
		if from != nil && d.format == "cow" && contains(from.diskIDs, d.id) {
			b.modes[d.id] = "incremental"
		}
	}
	if s.closed {
		return operationFailed(http.StatusServiceUnavailable, "The engine is shutting down.")
	}
	for _, id := range b.diskIDs {
		s.disks[id].status = diskLocked
		s.disks[id].backupID = b.id
	}
	s.backups[b.id] = b
	s.wg.Add(1)
	go s.startBackup(b)
	return xmlResponse(http.StatusCreated, s.backupXML(b))
}

// startBackup adds the new checkpoint's bitmaps and makes the backup ready.
func (s *Sim) startBackup(b *backup) {
	defer s.wg.Done()
	if !sleep(s.ctx, s.cfg.InitDelay) {
		return
	}
	var withBitmap []string
	for _, id := range b.diskIDs {
		s.mu.Lock()
		d := *s.disks[id]
		s.mu.Unlock()
		if d.format != "cow" {
			continue
		}
		if err := qemuImgBitmap(s.ctx, "--add", d.path, b.toCheckpoint); err != nil {
			s.cfg.Logf("enginesim: backup %s: %v", b.id, err)
			s.endBackup(b, backupFailed)
			return
		}
		withBitmap = append(withBitmap, id)
	}
	s.mu.Lock()
	cps := s.checkpoints[b.vmID]
	parent := ""
	if len(cps) > 0 {
		parent = cps[len(cps)-1].id
	}
	s.checkpoints[b.vmID] = append(cps, &checkpoint{id: b.toCheckpoint, parentID: parent, vmID: b.vmID, diskIDs: withBitmap, created: time.Now()})
	s.mu.Unlock()
	s.setBackupPhase(b, backupReady)
}

// endBackup unlocks the backup's disks and sets its final phase.
func (s *Sim) endBackup(b *backup, phase string) {
	s.mu.Lock()
	for _, id := range b.diskIDs {
		if d, ok := s.disks[id]; ok && d.backupID == b.id {
			d.backupID = ""
			if d.transfer == "" {
				d.status = diskOK
			}
		}
	}
	s.mu.Unlock()
	s.setBackupPhase(b, phase)
}

func qemuImgBitmap(ctx context.Context, op, path, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "bitmap", op, path, name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img bitmap %s %s: %v: %s", op, name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (s *Sim) lookupBackup(vm, id string) (*backup, bool) {
	b, ok := s.backups[id]
	if !ok || b.vmID != vm {
		return nil, false
	}
	return b, true
}

func (s *Sim) getBackup(vm, id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.lookupBackup(vm, id)
	if !ok {
		return notFound()
	}
	return xmlResponse(http.StatusOK, s.backupXML(b))
}

func (s *Sim) listBackups(vm string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf strings.Builder
	buf.WriteString("<backups>\n")
	for _, id := range sortedKeys(s.backups) {
		if b := s.backups[id]; b.vmID == vm {
			x, err := xml.Marshal(s.backupXML(b))
			if err != nil {
				return errorResponse(err)
			}
			buf.Write(x)
			buf.WriteString("\n")
		}
	}
	buf.WriteString("</backups>\n")
	return response{status: http.StatusOK, ctype: "application/xml", body: []byte(buf.String())}
}

// backupDisks answers GET .../backups/{id}/disks with each disk's backup_mode.
func (s *Sim) backupDisks(vm, id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.lookupBackup(vm, id)
	if !ok {
		return notFound()
	}
	var out xmlDisks
	for _, did := range b.diskIDs {
		if d, ok := s.disks[did]; ok {
			x := s.diskXML(d)
			x.BackupMode = b.modes[did]
			out.Items = append(out.Items, x)
		}
	}
	return xmlResponse(http.StatusOK, out)
}

// finalizeBackup answers POST .../backups/{id}/finalize. Every image
// transfer of the backup must have finished.
func (s *Sim) finalizeBackup(vm, id string) response {
	s.mu.Lock()
	b, ok := s.lookupBackup(vm, id)
	if !ok {
		s.mu.Unlock()
		return notFound()
	}
	for _, t := range s.transfers {
		if t.backupID == b.id && !finished(t.phase) {
			s.mu.Unlock()
			return operationFailed(http.StatusConflict, "Cannot stop VM backup. The VM backup has an image transfer in progress.")
		}
	}
	phase := b.phase
	if phase != backupReady {
		s.mu.Unlock()
		if phase == backupSucceeded || phase == backupFailed || phase == backupFinalizing {
			return xmlResponse(http.StatusOK, xmlActionResult{Status: "complete"})
		}
		return operationFailed(http.StatusConflict, "Cannot stop VM backup. The VM backup operation is currently in progress.")
	}
	b.phase = backupFinalizing
	b.modified = time.Now()
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if sleep(s.ctx, s.cfg.FinalizeDelay) {
			s.endBackup(b, backupSucceeded)
		}
	}()
	return xmlResponse(http.StatusOK, xmlActionResult{Status: "complete"})
}

func (s *Sim) checkpointXML(c *checkpoint) xmlCheckpoint {
	href := apiPrefix + "/vms/" + c.vmID + "/checkpoints/" + c.id
	return xmlCheckpoint{
		Href: href, ID: c.id,
		Links:        []xmlLink{{Href: href + "/disks", Rel: "disks"}},
		CreationDate: c.created.Format(time.RFC3339Nano),
		ParentID:     c.parentID,
		State:        "created",
		VM:           xmlRef{Href: apiPrefix + "/vms/" + c.vmID, ID: c.vmID},
	}
}

func (s *Sim) listCheckpoints(vm string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out xmlCheckpoints
	for _, c := range s.checkpoints[vm] {
		out.Items = append(out.Items, s.checkpointXML(c))
	}
	return xmlResponse(http.StatusOK, out)
}

func (s *Sim) getCheckpoint(vm, id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.checkpoints[vm] {
		if c.id == id {
			return xmlResponse(http.StatusOK, s.checkpointXML(c))
		}
	}
	return notFound()
}

// removeCheckpoint answers DELETE .../checkpoints/{id}: only the root
// (oldest) checkpoint can be removed; its bitmaps are removed from the disks.
func (s *Sim) removeCheckpoint(vm, id string) response {
	s.mu.Lock()
	cps := s.checkpoints[vm]
	if len(cps) == 0 || !hasCheckpoint(cps, id) {
		s.mu.Unlock()
		return notFound()
	}
	if cps[0].id != id {
		s.mu.Unlock()
		return operationFailed(http.StatusBadRequest, "Cannot remove VM checkpoint. Only the root checkpoint can be removed.")
	}
	c := cps[0]
	var paths []string
	for _, did := range c.diskIDs {
		d, ok := s.disks[did]
		if !ok {
			continue
		}
		if d.status == diskLocked {
			s.mu.Unlock()
			return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot remove VM checkpoint: The following disks are locked: %s. Please try again in a few minutes.", d.name))
		}
		paths = append(paths, d.path)
	}
	s.checkpoints[vm] = cps[1:]
	if len(s.checkpoints[vm]) > 0 {
		s.checkpoints[vm][0].parentID = ""
	}
	s.mu.Unlock()
	for _, p := range paths {
		if err := qemuImgBitmap(s.ctx, "--remove", p, c.id); err != nil {
			s.cfg.Logf("enginesim: removing checkpoint %s: %v", c.id, err)
		}
	}
	return response{status: http.StatusOK}
}

func hasCheckpoint(cps []*checkpoint, id string) bool {
	for _, c := range cps {
		if c.id == id {
			return true
		}
	}
	return false
}
