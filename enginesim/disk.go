package enginesim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Disk statuses.
const (
	diskOK      = "ok"
	diskLocked  = "locked"
	diskIllegal = "illegal"
)

// disk is a disk of the simulated engine: a file in StorageDir.
type disk struct {
	id, name, description string
	format                string // "cow" or "raw"
	provisioned, initial  int64
	sparse                bool
	backup                string
	contentType           string
	sdName                string
	imageID               string
	status                string
	path                  string
	transfer              string // id of the transfer holding the lock
	backupID              string // id of the backup holding the lock
}

// qemuFormat returns the qemu-img format of the disk's volume.
func (d *disk) qemuFormat() string {
	if d.format == "cow" {
		return "qcow2"
	}
	return "raw"
}

// Disk returns the status of the disk id ("ok", "locked", "illegal") and
// whether it exists, for tests.
func (s *Sim) Disk(id string) (status string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[id]
	if !ok {
		return "", false
	}
	return d.status, true
}

// DiskPath returns the file holding the disk id.
func (s *Sim) DiskPath(id string) string {
	return filepath.Join(s.cfg.StorageDir, id)
}

func (s *Sim) diskXML(d *disk) xmlDisk {
	href := apiPrefix + "/disks/" + d.id
	x := xmlDisk{
		Href: href, ID: d.id,
		Actions:         &xmlActions{Links: []xmlLink{{Href: href + "/copy", Rel: "copy"}, {Href: href + "/move", Rel: "move"}}},
		Name:            d.name,
		Description:     d.description,
		Alias:           d.name,
		Backup:          firstNonEmpty(d.backup, "none"),
		ContentType:     d.contentType,
		Format:          d.format,
		ImageID:         d.imageID,
		InitialSize:     d.initial,
		ProvisionedSize: d.provisioned,
		Sparse:          d.sparse,
		Status:          d.status,
		StorageType:     "image",
	}
	if d.format == "cow" {
		x.QcowVersion = "qcow2_v3"
	}
	if st, err := os.Stat(d.path); err == nil {
		x.ActualSize = allocated(st)
		x.TotalSize = x.ActualSize
	}
	id := s.sdIDs[d.sdName]
	x.StorageDomains.Items = []xmlRef{{Href: apiPrefix + "/storagedomains/" + id, ID: id}}
	return x
}

// allocated returns the bytes allocated to a file.
func allocated(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks * 512
	}
	return st.Size()
}

// addDisk answers POST /disks: the disk is locked while its volume is
// created, then ok. The answer is 202 with the locked disk, like the
// engine's default non-blocking add.
func (s *Sim) addDisk(body []byte) response {
	req, err := parseDisk(body)
	if err != nil {
		return errorResponse(err)
	}
	if req.ProvisionedSize == 0 {
		return operationFailed(http.StatusBadRequest, "Cannot add Virtual Disk. Disk's provisioned size has to be greater than 0.")
	}
	sdName := req.SDName
	if req.SDID != "" {
		sdName = ""
		for n, id := range s.sdIDs {
			if id == req.SDID {
				sdName = n
			}
		}
	} else if _, ok := s.sdIDs[sdName]; !ok {
		sdName = ""
	}
	if sdName == "" {
		return operationFailed(http.StatusBadRequest, "Cannot add Virtual Disk. Storage Domain doesn't exist.")
	}
	if t := s.sdTypes[sdName]; (t == "iscsi" || t == "fcp") && req.Format == "raw" && req.Sparse {
		return operationFailed(http.StatusBadRequest, "Cannot add Virtual Disk. Disk configuration (RAW Sparse) is incompatible with the storage domain type.")
	}
	if req.ContentType == "iso" && req.Format != "raw" {
		return operationFailed(http.StatusBadRequest, "Cannot add Virtual Disk. ISO disks must use the raw format.")
	}
	if req.Backup == "incremental" && req.Format != "cow" {
		return operationFailed(http.StatusBadRequest, "Cannot add Virtual Disk. Incremental backup is only supported for QCOW2 disks.")
	}
	id := req.ID
	if id == "" {
		id = newID()
	} else if !validID(id) {
		return errorResponse(badRequest("invalid disk id %q", id))
	}
	d := &disk{
		id: id, name: firstNonEmpty(req.Name, "disk-"+id[:8]), description: req.Description,
		format: req.Format, provisioned: req.ProvisionedSize, initial: req.InitialSize,
		sparse: req.Sparse, backup: req.Backup, contentType: req.ContentType,
		sdName: sdName, imageID: newID(), status: diskLocked, path: s.DiskPath(id),
	}
	s.mu.Lock()
	if _, exists := s.disks[id]; exists {
		s.mu.Unlock()
		return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot add Virtual Disk. Disk with ID %s already exists.", id))
	}
	if s.closed {
		s.mu.Unlock()
		return operationFailed(http.StatusServiceUnavailable, "The engine is shutting down.")
	}
	s.disks[id] = d
	x := s.diskXML(d)
	s.wg.Add(1)
	s.mu.Unlock()
	go s.createVolume(d)
	x.CreationStatus = "in_progress"
	r := xmlResponse(http.StatusAccepted, x)
	r.header = map[string]string{"Location": apiPrefix + "/disks/" + id}
	return r
}

// validID accepts UUID-like ids, which are used as file names.
func validID(id string) bool {
	if len(id) < 8 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' || r == '-') {
			return false
		}
	}
	return true
}

// createVolume makes the disk's file after DiskDelay; the disk turns ok,
// or illegal if qemu-img fails.
func (s *Sim) createVolume(d *disk) {
	defer s.wg.Done()
	if !sleep(s.ctx, s.cfg.DiskDelay) {
		return
	}
	args := []string{"create", "-q", "-f", d.qemuFormat()}
	if d.format == "cow" {
		args = append(args, "-o", "compat=1.1")
		if !d.sparse {
			args = append(args, "-o", "preallocation=falloc")
		}
	} else if !d.sparse {
		args = append(args, "-o", "preallocation=falloc")
	}
	args = append(args, d.path, strconv.FormatInt(d.provisioned, 10))
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Minute)
	out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput()
	cancel()
	status := diskOK
	if err != nil {
		s.cfg.Logf("enginesim: creating volume of disk %s: %v: %s", d.id, err, strings.TrimSpace(string(out)))
		status = diskIllegal
	}
	s.mu.Lock()
	d.status = status
	s.mu.Unlock()
}

func (s *Sim) getDisk(id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[id]
	if !ok {
		return notFound()
	}
	return xmlResponse(http.StatusOK, s.diskXML(d))
}

func (s *Sim) listDisks() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out xmlDisks
	for _, id := range sortedKeys(s.disks) {
		out.Items = append(out.Items, s.diskXML(s.disks[id]))
	}
	return xmlResponse(http.StatusOK, out)
}

// removeDisk answers DELETE /disks/{id}: 200 with no body, 409 while locked.
func (s *Sim) removeDisk(id string) response {
	s.mu.Lock()
	d, ok := s.disks[id]
	if !ok {
		s.mu.Unlock()
		return notFound()
	}
	if d.status == diskLocked {
		s.mu.Unlock()
		return operationFailed(http.StatusConflict, fmt.Sprintf("Cannot remove Virtual Disk: The following disks are locked: %s. Please try again in a few minutes.", d.name))
	}
	delete(s.disks, id)
	s.mu.Unlock()
	if err := os.Remove(d.path); err != nil && !os.IsNotExist(err) {
		s.cfg.Logf("enginesim: removing volume of disk %s: %v", id, err)
	}
	return response{status: http.StatusOK}
}

// dropDisk removes a disk and its volume (the engine's RemoveDisk after a
// cancelled or failed upload).
func (s *Sim) dropDisk(id string) {
	s.mu.Lock()
	d, ok := s.disks[id]
	delete(s.disks, id)
	s.mu.Unlock()
	if ok {
		if err := os.Remove(d.path); err != nil && !os.IsNotExist(err) {
			s.cfg.Logf("enginesim: removing volume of disk %s: %v", id, err)
		}
	}
}

// verifyVolume checks what the engine checks when an upload is finalized:
// a cow disk must hold qcow2 without a backing file, a raw disk raw.
func verifyVolume(ctx context.Context, d *disk) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", "-U", d.path).Output()
	if err != nil {
		return fmt.Errorf("inspecting volume: %w", err)
	}
	var info struct {
		Format          string `json:"format"`
		BackingFilename string `json:"backing-filename"`
		VirtualSize     int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("parsing qemu-img info: %w", err)
	}
	want := d.qemuFormat()
	if info.Format != want {
		return fmt.Errorf("volume format is %s, disk format requires %s", info.Format, want)
	}
	if info.BackingFilename != "" {
		return fmt.Errorf("volume has a backing file %q", info.BackingFilename)
	}
	if d.format == "cow" && info.VirtualSize != d.provisioned {
		return fmt.Errorf("volume virtual size is %d, disk provisioned size is %d", info.VirtualSize, d.provisioned)
	}
	return nil
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func statSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
