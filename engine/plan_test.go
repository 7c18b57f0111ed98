package engine

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanDisk(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name  string
		facts ImageFacts
		opts  PlanOptions
		want  DiskSpec
	}{
		{
			name:  "qcow2 sparse",
			facts: ImageFacts{Format: "qcow2", VirtualSize: 10 * gib, Required: 3 * gib},
			opts:  PlanOptions{Name: "d", StorageDomain: "data1"},
			want:  DiskSpec{Name: "d", StorageDomain: "data1", Format: FormatQcow2, ProvisionedSize: 10 * gib, InitialSize: 3 * gib, Sparse: true, Backup: true},
		},
		{
			name:  "qcow2 preallocated has no initial size",
			facts: ImageFacts{Format: "qcow2", VirtualSize: gib, Required: gib / 2},
			opts:  PlanOptions{Preallocated: true},
			want:  DiskSpec{Format: FormatQcow2, ProvisionedSize: gib, Backup: true},
		},
		{
			name:  "raw stays raw",
			facts: ImageFacts{Format: "raw", VirtualSize: gib, Required: gib},
			want:  DiskSpec{Format: FormatRaw, ProvisionedSize: gib, Sparse: true},
		},
		{
			name:  "raw on block storage is preallocated",
			facts: ImageFacts{Format: "raw", VirtualSize: gib},
			opts:  PlanOptions{BlockStorage: true},
			want:  DiskSpec{Format: FormatRaw, ProvisionedSize: gib},
		},
		{
			name:  "qcow2 on block storage stays sparse",
			facts: ImageFacts{Format: "qcow2", VirtualSize: gib, Required: 4096},
			opts:  PlanOptions{BlockStorage: true},
			want:  DiskSpec{Format: FormatQcow2, ProvisionedSize: gib, InitialSize: 4096, Sparse: true, Backup: true},
		},
		{
			name:  "raw image to qcow2 disk",
			facts: ImageFacts{Format: "raw", VirtualSize: gib, Required: 4096},
			opts:  PlanOptions{Format: FormatQcow2, ID: "id1"},
			want:  DiskSpec{Format: FormatQcow2, ProvisionedSize: gib, InitialSize: 4096, Sparse: true, Backup: true, ID: "id1"},
		},
		{
			name:  "vmdk becomes qcow2",
			facts: ImageFacts{Format: "vmdk", VirtualSize: gib},
			want:  DiskSpec{Format: FormatQcow2, ProvisionedSize: gib, Sparse: true, Backup: true},
		},
		{
			name:  "iso is raw preallocated",
			facts: ImageFacts{Format: "raw", VirtualSize: 3 << 20, ISO: true},
			opts:  PlanOptions{Format: FormatQcow2},
			want:  DiskSpec{Format: FormatRaw, ProvisionedSize: 3 << 20, ISO: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanDisk(tc.facts, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("PlanDisk mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanDiskErrors(t *testing.T) {
	if _, err := PlanDisk(ImageFacts{Format: "raw"}, PlanOptions{}); err == nil {
		t.Error("zero virtual size: got nil error")
	}
	if _, err := PlanDisk(ImageFacts{Format: "raw", VirtualSize: 1}, PlanOptions{Format: "vmdk"}); err == nil {
		t.Error("format vmdk: got nil error")
	}
}

func TestIsISO(t *testing.T) {
	iso := make([]byte, 0x9000)
	copy(iso[0x8001:], "CD001")
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"iso", iso, true},
		{"zeros", make([]byte, 0x9000), false},
		{"short", []byte("CD001"), false},
		{"empty", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IsISO(bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("IsISO = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAPIURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://engine", "https://engine/ovirt-engine/api"},
		{"https://engine/", "https://engine/ovirt-engine/api"},
		{"https://engine:8443/ovirt-engine/api", "https://engine:8443/ovirt-engine/api"},
		{"https://engine/ovirt-engine/api/", "https://engine/ovirt-engine/api"},
		{"http://127.0.0.1:1/x", "http://127.0.0.1:1/x/ovirt-engine/api"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := APIURL(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("APIURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"engine", "ftp://engine", "https://", "://x"} {
		if _, err := APIURL(bad); err == nil {
			t.Errorf("APIURL(%q): got nil error", bad)
		}
	}
}
