package enginesim

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// apiPrefix is the path of the API root.
const apiPrefix = "/ovirt-engine/api"

// Representations sent by the simulator. Element names and order follow
// the engine's own responses (engine-api reference, sections 3 to 6).

type xmlLink struct {
	Href string `xml:"href,attr"`
	Rel  string `xml:"rel,attr"`
}

type xmlRef struct {
	Href string `xml:"href,attr,omitempty"`
	ID   string `xml:"id,attr"`
}

type xmlActions struct {
	Links []xmlLink `xml:"link"`
}

type xmlAPI struct {
	XMLName     xml.Name  `xml:"api"`
	Links       []xmlLink `xml:"link"`
	ProductInfo struct {
		InstanceID string `xml:"instance_id"`
		Name       string `xml:"name"`
		Version    struct {
			Build       int    `xml:"build"`
			FullVersion string `xml:"full_version"`
			Major       int    `xml:"major"`
			Minor       int    `xml:"minor"`
			Revision    int    `xml:"revision"`
		} `xml:"version"`
	} `xml:"product_info"`
	Time              string `xml:"time"`
	AuthenticatedUser xmlRef `xml:"authenticated_user"`
	EffectiveUser     xmlRef `xml:"effective_user"`
}

type xmlStorage struct {
	Address string `xml:"address,omitempty"`
	Path    string `xml:"path"`
	Type    string `xml:"type"`
}

type xmlStorageDomain struct {
	XMLName        xml.Name   `xml:"storage_domain"`
	Href           string     `xml:"href,attr"`
	ID             string     `xml:"id,attr"`
	Name           string     `xml:"name"`
	Available      int64      `xml:"available"`
	Committed      int64      `xml:"committed"`
	ExternalStatus string     `xml:"external_status"`
	Master         bool       `xml:"master"`
	Status         string     `xml:"status"`
	Storage        xmlStorage `xml:"storage"`
	StorageFormat  string     `xml:"storage_format"`
	Type           string     `xml:"type"`
	Used           int64      `xml:"used"`
	DataCenters    struct {
		DataCenter []xmlRef `xml:"data_center"`
	} `xml:"data_centers"`
}

type xmlStorageDomains struct {
	XMLName xml.Name           `xml:"storage_domains"`
	Items   []xmlStorageDomain `xml:"storage_domain"`
}

type xmlDisk struct {
	XMLName         xml.Name    `xml:"disk"`
	Href            string      `xml:"href,attr"`
	ID              string      `xml:"id,attr"`
	Actions         *xmlActions `xml:"actions,omitempty"`
	Name            string      `xml:"name"`
	Description     string      `xml:"description,omitempty"`
	ActualSize      int64       `xml:"actual_size"`
	Alias           string      `xml:"alias"`
	Backup          string      `xml:"backup"`
	BackupMode      string      `xml:"backup_mode,omitempty"`
	ContentType     string      `xml:"content_type"`
	Format          string      `xml:"format"`
	ImageID         string      `xml:"image_id"`
	InitialSize     int64       `xml:"initial_size,omitempty"`
	PropagateErrors bool        `xml:"propagate_errors"`
	ProvisionedSize int64       `xml:"provisioned_size"`
	QcowVersion     string      `xml:"qcow_version,omitempty"`
	Shareable       bool        `xml:"shareable"`
	Sparse          bool        `xml:"sparse"`
	Status          string      `xml:"status"`
	StorageType     string      `xml:"storage_type"`
	TotalSize       int64       `xml:"total_size"`
	WipeAfterDelete bool        `xml:"wipe_after_delete"`
	CreationStatus  string      `xml:"creation_status,omitempty"`
	StorageDomains  struct {
		Items []xmlRef `xml:"storage_domain"`
	} `xml:"storage_domains"`
}

type xmlDisks struct {
	XMLName xml.Name  `xml:"disks"`
	Items   []xmlDisk `xml:"disk"`
}

type xmlImageTransfer struct {
	XMLName           xml.Name    `xml:"image_transfer"`
	Href              string      `xml:"href,attr"`
	ID                string      `xml:"id,attr"`
	Actions           *xmlActions `xml:"actions,omitempty"`
	Active            bool        `xml:"active"`
	Direction         string      `xml:"direction"`
	Format            string      `xml:"format"`
	InactivityTimeout int         `xml:"inactivity_timeout"`
	Phase             string      `xml:"phase"`
	ProxyURL          string      `xml:"proxy_url,omitempty"`
	Shallow           bool        `xml:"shallow"`
	TimeoutPolicy     string      `xml:"timeout_policy"`
	TransferURL       string      `xml:"transfer_url,omitempty"`
	Transferred       int64       `xml:"transferred"`
	Host              *xmlRef     `xml:"host,omitempty"`
	Image             *xmlRef     `xml:"image,omitempty"`
}

type xmlImageTransfers struct {
	XMLName xml.Name           `xml:"image_transfers"`
	Items   []xmlImageTransfer `xml:"image_transfer"`
}

type xmlHost struct {
	XMLName xml.Name `xml:"host"`
	Href    string   `xml:"href,attr"`
	ID      string   `xml:"id,attr"`
	Name    string   `xml:"name"`
	Address string   `xml:"address"`
	Status  string   `xml:"status"`
}

type xmlHosts struct {
	XMLName xml.Name  `xml:"hosts"`
	Items   []xmlHost `xml:"host"`
}

type xmlActionResult struct {
	XMLName xml.Name `xml:"action"`
	Status  string   `xml:"status"`
}

type xmlFault struct {
	XMLName xml.Name `xml:"fault"`
	Reason  string   `xml:"reason"`
	Detail  string   `xml:"detail"`
}

// marshal returns the XML document for v with the engine's header.
func marshal(v any) ([]byte, error) {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header[:len(xml.Header)-1]+"\n"), append(b, '\n')...), nil
}

// Requests the simulator reads.

// diskRequest is the body of POST /disks.
type diskRequest struct {
	ID              string
	Name            string
	Description     string
	Format          string // "cow" or "raw"
	ProvisionedSize int64
	InitialSize     int64
	Sparse          bool
	Backup          string
	ContentType     string
	SDName, SDID    string
}

type xmlDiskIn struct {
	XMLName         xml.Name `xml:"disk"`
	ID              string   `xml:"id,attr"`
	Name            string   `xml:"name"`
	Alias           string   `xml:"alias"`
	Description     string   `xml:"description"`
	Format          string   `xml:"format"`
	ProvisionedSize string   `xml:"provisioned_size"`
	InitialSize     string   `xml:"initial_size"`
	Sparse          string   `xml:"sparse"`
	Backup          string   `xml:"backup"`
	ContentType     string   `xml:"content_type"`
	StorageDomains  struct {
		Items []struct {
			ID   string `xml:"id,attr"`
			Name string `xml:"name"`
		} `xml:"storage_domain"`
	} `xml:"storage_domains"`
}

// errBadRequest marks request errors answered with 400.
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// parseDisk reads a POST /disks body.
func parseDisk(body []byte) (diskRequest, error) {
	var in xmlDiskIn
	if err := xml.Unmarshal(body, &in); err != nil {
		return diskRequest{}, badRequest("parsing disk: %v", err)
	}
	r := diskRequest{
		ID:          in.ID,
		Name:        firstNonEmpty(in.Name, in.Alias),
		Description: in.Description,
		Format:      strings.TrimSpace(in.Format),
		Backup:      strings.TrimSpace(in.Backup),
		ContentType: firstNonEmpty(strings.TrimSpace(in.ContentType), "data"),
		Sparse:      true,
	}
	var err error
	if r.ProvisionedSize, err = parseInt(in.ProvisionedSize, "provisioned_size", true); err != nil {
		return diskRequest{}, err
	}
	if r.InitialSize, err = parseInt(in.InitialSize, "initial_size", false); err != nil {
		return diskRequest{}, err
	}
	if s := strings.TrimSpace(in.Sparse); s != "" {
		if r.Sparse, err = strconv.ParseBool(s); err != nil {
			return diskRequest{}, badRequest("invalid value for sparse: %q", s)
		}
	}
	switch r.Format {
	case "cow", "raw":
	case "":
		return diskRequest{}, badRequest("disk [format] required")
	default:
		return diskRequest{}, badRequest("invalid value for format: %q", r.Format)
	}
	if len(in.StorageDomains.Items) != 1 {
		return diskRequest{}, badRequest("disk [storageDomains] required: exactly one storage domain")
	}
	r.SDID = in.StorageDomains.Items[0].ID
	r.SDName = strings.TrimSpace(in.StorageDomains.Items[0].Name)
	if r.SDID == "" && r.SDName == "" {
		return diskRequest{}, badRequest("storage domain id or name required")
	}
	return r, nil
}

// transferRequest is the body of POST /imagetransfers.
type transferRequest struct {
	DiskID            string
	SnapshotID        string
	BackupID          string
	Direction         string
	Format            string
	HostID            string
	InactivityTimeout int // -1 = not given
	TimeoutPolicy     string
}

type xmlTransferIn struct {
	XMLName           xml.Name `xml:"image_transfer"`
	Direction         string   `xml:"direction"`
	Disk              *xmlRef  `xml:"disk"`
	Image             *xmlRef  `xml:"image"`
	Snapshot          *xmlRef  `xml:"snapshot"`
	Backup            *xmlRef  `xml:"backup"`
	Host              *xmlRef  `xml:"host"`
	Format            string   `xml:"format"`
	InactivityTimeout string   `xml:"inactivity_timeout"`
	TimeoutPolicy     string   `xml:"timeout_policy"`
}

// parseTransfer reads a POST /imagetransfers body.
func parseTransfer(body []byte) (transferRequest, error) {
	var in xmlTransferIn
	if err := xml.Unmarshal(body, &in); err != nil {
		return transferRequest{}, badRequest("parsing image transfer: %v", err)
	}
	r := transferRequest{
		Direction:     firstNonEmpty(strings.TrimSpace(in.Direction), "upload"),
		Format:        strings.TrimSpace(in.Format),
		TimeoutPolicy: firstNonEmpty(strings.TrimSpace(in.TimeoutPolicy), "legacy"),
	}
	switch {
	case in.Disk != nil && in.Disk.ID != "":
		r.DiskID = in.Disk.ID
	case in.Image != nil && in.Image.ID != "":
		r.DiskID = in.Image.ID
	case in.Snapshot != nil && in.Snapshot.ID != "":
		r.SnapshotID = in.Snapshot.ID
	default:
		return transferRequest{}, badRequest("image transfer [disk.id|image.id|snapshot.id] required")
	}
	if in.Backup != nil {
		r.BackupID = in.Backup.ID
	}
	if in.Host != nil {
		r.HostID = in.Host.ID
	}
	switch r.Direction {
	case "upload", "download":
	default:
		return transferRequest{}, badRequest("invalid value for direction: %q", r.Direction)
	}
	switch r.Format {
	case "", "raw", "cow":
	default:
		return transferRequest{}, badRequest("invalid value for format: %q", r.Format)
	}
	switch r.TimeoutPolicy {
	case "legacy", "pause", "cancel":
	default:
		return transferRequest{}, badRequest("invalid value for timeout_policy: %q", r.TimeoutPolicy)
	}
	it, err := parseInt(in.InactivityTimeout, "inactivity_timeout", false)
	if err != nil {
		return transferRequest{}, err
	}
	r.InactivityTimeout = -1
	if strings.TrimSpace(in.InactivityTimeout) != "" {
		if it < 0 || it > 1<<31-1 {
			return transferRequest{}, badRequest("invalid value for inactivity_timeout: %d", it)
		}
		r.InactivityTimeout = int(it)
	}
	return r, nil
}

func parseInt(s, name string, required bool) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		if required {
			return 0, badRequest("disk [%s] required", name)
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("invalid value for %s: %q", name, s)
	}
	return n, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
