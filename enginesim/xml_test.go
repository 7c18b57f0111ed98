package enginesim

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDisk(t *testing.T) {
	// The exact bytes the pinned SDK writes (engine-api reference §5.1).
	sdk := `<disk id="9a0e58a1-5d36-4b6e-8f0c-0e0c1c3c8a11"><backup>incremental</backup><content_type>data</content_type><description>Uploaded disk</description><format>cow</format><initial_size>1638400000</initial_size><name>disk.qcow2</name><provisioned_size>10737418240</provisioned_size><sparse>true</sparse><storage_domains><storage_domain><name>data1</name></storage_domain></storage_domains></disk>`
	got, err := parseDisk([]byte(sdk))
	if err != nil {
		t.Fatal(err)
	}
	want := diskRequest{
		ID: "9a0e58a1-5d36-4b6e-8f0c-0e0c1c3c8a11", Name: "disk.qcow2", Description: "Uploaded disk",
		Format: "cow", ProvisionedSize: 10737418240, InitialSize: 1638400000, Sparse: true,
		Backup: "incremental", ContentType: "data", SDName: "data1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseDisk mismatch (-want +got):\n%s", diff)
	}
	bad := []struct{ name, body string }{
		{"not xml", "x"},
		{"no format", `<disk><provisioned_size>1</provisioned_size><storage_domains><storage_domain><name>a</name></storage_domain></storage_domains></disk>`},
		{"bad format", `<disk><format>vmdk</format><provisioned_size>1</provisioned_size><storage_domains><storage_domain><name>a</name></storage_domain></storage_domains></disk>`},
		{"no size", `<disk><format>raw</format><storage_domains><storage_domain><name>a</name></storage_domain></storage_domains></disk>`},
		{"negative size", `<disk><format>raw</format><provisioned_size>-1</provisioned_size><storage_domains><storage_domain><name>a</name></storage_domain></storage_domains></disk>`},
		{"no domain", `<disk><format>raw</format><provisioned_size>1</provisioned_size></disk>`},
		{"bad sparse", `<disk><format>raw</format><sparse>maybe</sparse><provisioned_size>1</provisioned_size><storage_domains><storage_domain><name>a</name></storage_domain></storage_domains></disk>`},
		{"wrong element", `<vm><format>raw</format></vm>`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseDisk([]byte(tc.body)); !errors.Is(err, errBadRequest) {
				t.Errorf("parseDisk error %v, want errBadRequest", err)
			}
		})
	}
}

func TestParseTransfer(t *testing.T) {
	tests := []struct {
		name string
		body string
		want transferRequest
	}{
		{
			name: "sdk upload",
			body: `<image_transfer><direction>upload</direction><disk id="d1"></disk><format>raw</format><host id="h1"></host><inactivity_timeout>120</inactivity_timeout><timeout_policy>cancel</timeout_policy></image_transfer>`,
			want: transferRequest{DiskID: "d1", Direction: "upload", Format: "raw", HostID: "h1", InactivityTimeout: 120, TimeoutPolicy: "cancel"},
		},
		{
			name: "legacy image id, defaults",
			body: `<image_transfer><image id="d2"/></image_transfer>`,
			want: transferRequest{DiskID: "d2", Direction: "upload", InactivityTimeout: -1, TimeoutPolicy: "legacy"},
		},
		{
			name: "backup download",
			body: `<image_transfer><backup id="b1"></backup><direction>download</direction><disk id="d1"></disk><format>raw</format></image_transfer>`,
			want: transferRequest{DiskID: "d1", BackupID: "b1", Direction: "download", Format: "raw", InactivityTimeout: -1, TimeoutPolicy: "legacy"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTransfer([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseTransfer mismatch (-want +got):\n%s", diff)
			}
		})
	}
	for _, body := range []string{
		``, `<image_transfer/>`, `<image_transfer><disk id="d"/><direction>sideways</direction></image_transfer>`,
		`<image_transfer><disk id="d"/><format>vmdk</format></image_transfer>`,
		`<image_transfer><disk id="d"/><inactivity_timeout>-5</inactivity_timeout></image_transfer>`,
		`<image_transfer><disk id="d"/><timeout_policy>never</timeout_policy></image_transfer>`,
	} {
		if _, err := parseTransfer([]byte(body)); !errors.Is(err, errBadRequest) {
			t.Errorf("parseTransfer(%q) error %v, want errBadRequest", body, err)
		}
	}
}

func TestMatchName(t *testing.T) {
	tests := []struct {
		search, name  string
		caseSensitive bool
		want          bool
	}{
		{"name=data1", "data1", true, true},
		{"name=DATA1", "data1", true, false},
		{"name=DATA1", "data1", false, true},
		{"name=da*", "data1", true, true},
		{"name=*1", "data1", true, true},
		{"name=d?ta1", "data1", true, false},
		{"name=[d]ata1", "data1", true, false},
		{"name=d*a*1", "data1", true, true},
		{"name=d*x*1", "data1", true, false},
		{"name=data1*", "data1", true, true},
		{"name=*", "data1", true, true},
		{`name="data1"`, "data1", true, true},
		{" name = data1 ", "data1", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.search, func(t *testing.T) {
			p, ok := searchName(tc.search)
			if !ok {
				t.Fatalf("searchName(%q) found no name", tc.search)
			}
			if got := matchName(p, tc.name, tc.caseSensitive); got != tc.want {
				t.Errorf("matchName(%q, %q, %v) = %v, want %v", p, tc.name, tc.caseSensitive, got, tc.want)
			}
		})
	}
	if _, ok := searchName("status=active"); ok {
		t.Error("searchName(status=active) found a name")
	}
}

func TestVerifyVolume(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	dir := t.TempDir()
	mk := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		out, err := exec.Command("qemu-img", append(append([]string{"create", "-q"}, args...), p, "1M")...).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		return p
	}
	raw := mk("raw", "-f", "raw")
	qcow := mk("qcow", "-f", "qcow2")
	overlay := filepath.Join(dir, "overlay")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", qcow, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create overlay: %v: %s", err, out)
	}
	tests := []struct {
		name   string
		path   string
		format string
		ok     bool
	}{
		{"raw disk holds raw", raw, "raw", true},
		{"cow disk holds qcow2", qcow, "cow", true},
		{"cow disk holds raw", raw, "cow", false},
		{"raw disk holds qcow2", qcow, "raw", false},
		{"cow disk with backing file", overlay, "cow", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyVolume(context.Background(), &disk{id: "x", path: tc.path, format: tc.format, provisioned: 1 << 20})
			if (err == nil) != tc.ok {
				t.Errorf("verifyVolume = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func FuzzParseDisk(f *testing.F) {
	f.Add([]byte(`<disk id="x"><format>cow</format><name>n</name><provisioned_size>10</provisioned_size><sparse>true</sparse><storage_domains><storage_domain><name>data1</name></storage_domain></storage_domains></disk>`))
	f.Add([]byte(`<disk><format>raw</format><provisioned_size>1</provisioned_size><storage_domains><storage_domain id="a"/></storage_domains></disk>`))
	f.Add([]byte(`<disk/>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseDisk(b)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error %v does not wrap errBadRequest", err)
			}
			return
		}
		if r.Format != "cow" && r.Format != "raw" || r.ProvisionedSize < 0 || r.SDID == "" && r.SDName == "" {
			t.Fatalf("accepted invalid disk %+v", r)
		}
	})
}

func FuzzParseTransfer(f *testing.F) {
	f.Add([]byte(`<image_transfer><direction>upload</direction><disk id="d1"></disk><format>raw</format><inactivity_timeout>120</inactivity_timeout><timeout_policy>cancel</timeout_policy></image_transfer>`))
	f.Add([]byte(`<image_transfer><image id="d"/></image_transfer>`))
	f.Add([]byte(`<image_transfer><snapshot id="s"/><shallow>true</shallow></image_transfer>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseTransfer(b)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error %v does not wrap errBadRequest", err)
			}
			return
		}
		if r.DiskID == "" && r.SnapshotID == "" || r.Direction != "upload" && r.Direction != "download" || r.InactivityTimeout < -1 {
			t.Fatalf("accepted invalid transfer %+v", r)
		}
	})
}

func FuzzParseBackup(f *testing.F) {
	f.Add([]byte(`<backup><description>imageio incremental</description><disks><disk id="d1"></disk></disks><from_checkpoint_id>cp-0</from_checkpoint_id></backup>`))
	f.Add([]byte(`<backup id="b"><disks/></backup>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := parseBackup(b)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error %v does not wrap errBadRequest", err)
			}
			return
		}
		if len(in.Disks.Items) == 0 {
			t.Fatalf("accepted a backup without disks: %+v", in)
		}
	})
}

func FuzzMatchName(f *testing.F) {
	f.Add("name=data1", "data1", true)
	f.Add("name=d*[", "d*[", false)
	f.Fuzz(func(t *testing.T, search, name string, cs bool) {
		p, ok := searchName(search)
		if !ok {
			return
		}
		if !matchName(p, p, true) || !matchName(p, p, false) {
			t.Fatalf("pattern %q does not match itself", p)
		}
		if !hasStar(p) && matchName(p, name, true) != (p == name) {
			t.Fatalf("pattern %q without wildcard: match %q = %v", p, name, !(p == name))
		}
	})
}

func hasStar(s string) bool {
	for _, r := range s {
		if r == '*' {
			return true
		}
	}
	return false
}
