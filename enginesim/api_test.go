package enginesim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
)

// rawClient talks to the simulator without the SDK, to check wire details.
type rawClient struct {
	t     *testing.T
	hc    *http.Client
	base  string
	token string
}

func newRawClient(t *testing.T, sim *enginesim.Sim) *rawClient {
	rc := &rawClient{t: t, hc: imagesClient(t, sim), base: sim.URL()}
	form := url.Values{"grant_type": {"password"}, "scope": {"ovirt-app-api"}, "username": {sim.Username}, "password": {sim.Password}}
	status, body := rc.do("POST", "/ovirt-engine/sso/oauth/token", "application/x-www-form-urlencoded", form.Encode())
	if status != http.StatusOK {
		t.Fatalf("SSO: %d %s", status, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.AccessToken == "" || tok.TokenType != "bearer" {
		t.Fatalf("SSO answer %s: %v", body, err)
	}
	rc.token = tok.AccessToken
	return rc
}

func (rc *rawClient) do(method, path, ctype, body string) (int, string) {
	rc.t.Helper()
	req, err := http.NewRequest(method, rc.base+path, strings.NewReader(body))
	if err != nil {
		rc.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if rc.token != "" {
		req.Header.Set("Authorization", "Bearer "+rc.token)
	}
	resp, err := rc.hc.Do(req)
	if err != nil {
		rc.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitFor polls get until it returns true, bounded by count and time.
func waitFor(t *testing.T, what string, get func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		if get() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestWire(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	rc := newRawClient(t, sim)
	const api = "/ovirt-engine/api"

	t.Run("sso wrong password", func(t *testing.T) {
		anon := &rawClient{t: t, hc: rc.hc, base: rc.base}
		form := url.Values{"grant_type": {"password"}, "scope": {"ovirt-app-api"}, "username": {sim.Username}, "password": {"bad"}}
		status, body := anon.do("POST", "/ovirt-engine/sso/oauth/token", "application/x-www-form-urlencoded", form.Encode())
		if status != http.StatusBadRequest || !strings.Contains(body, `"error_code":"access_denied"`) {
			t.Errorf("got %d %s, want 400 access_denied", status, body)
		}
	})
	t.Run("no token", func(t *testing.T) {
		anon := &rawClient{t: t, hc: rc.hc, base: rc.base}
		status, body := anon.do("GET", api, "", "")
		if status != http.StatusUnauthorized || !strings.Contains(body, "invalid_grant") {
			t.Errorf("got %d %s, want 401 with the invalid_grant page", status, body)
		}
	})
	t.Run("missing disk is 404 with empty body", func(t *testing.T) {
		status, body := rc.do("GET", api+"/disks/00000000-0000-0000-0000-000000000000", "", "")
		if status != http.StatusNotFound || body != "" {
			t.Errorf("got %d %q, want 404 with empty body", status, body)
		}
	})
	t.Run("search is case-insensitive by default", func(t *testing.T) {
		_, body := rc.do("GET", api+"/storagedomains?search=name%3DDATA1", "", "")
		if !strings.Contains(body, "<name>data1</name>") {
			t.Errorf("search name=DATA1 found nothing: %s", body)
		}
		_, body = rc.do("GET", api+"/storagedomains?search=name%3DDATA1&case_sensitive=true", "", "")
		if strings.Contains(body, "<storage_domain ") {
			t.Errorf("case-sensitive search name=DATA1 found a domain: %s", body)
		}
		_, body = rc.do("GET", api+"/storagedomains?search=name%3Dda*", "", "")
		if !strings.Contains(body, "<name>data1</name>") {
			t.Errorf("search name=da* found nothing: %s", body)
		}
	})

	var diskID string
	t.Run("add disk", func(t *testing.T) {
		status, body := rc.do("POST", api+"/disks", "application/xml",
			`<disk><format>cow</format><name>d1</name><provisioned_size>1048576</provisioned_size><storage_domains><storage_domain><name>data1</name></storage_domain></storage_domains></disk>`)
		if status != http.StatusAccepted || !strings.Contains(body, "<status>locked</status>") {
			t.Fatalf("got %d %s, want 202 with a locked disk", status, body)
		}
		i := strings.Index(body, `id="`)
		diskID = body[i+4 : i+40]
		status, body = rc.do("DELETE", api+"/disks/"+diskID, "", "")
		if status != http.StatusConflict {
			t.Errorf("DELETE of a locked disk: %d %s, want 409", status, body)
		}
		waitFor(t, "disk ok", func() bool { s, _ := sim.Disk(diskID); return s == "ok" })
	})
	t.Run("bad disk", func(t *testing.T) {
		for _, body := range []string{
			`<disk><name>x</name><provisioned_size>1</provisioned_size><storage_domains><storage_domain><name>data1</name></storage_domain></storage_domains></disk>`,
			`<disk><format>raw</format><provisioned_size>1</provisioned_size><storage_domains><storage_domain><name>nosuch</name></storage_domain></storage_domains></disk>`,
			`<disk><format>raw</format><provisioned_size>0</provisioned_size><storage_domains><storage_domain><name>data1</name></storage_domain></storage_domains></disk>`,
			`not xml`,
		} {
			status, resp := rc.do("POST", api+"/disks", "application/xml", body)
			if status != http.StatusBadRequest || !strings.Contains(resp, "<fault>") {
				t.Errorf("POST %s: got %d %s, want 400 with a fault", body, status, resp)
			}
		}
	})
	t.Run("transfer", func(t *testing.T) {
		status, body := rc.do("POST", api+"/imagetransfers", "application/xml",
			`<image_transfer><direction>download</direction><image id="`+diskID+`"></image><format>raw</format></image_transfer>`)
		if status != http.StatusCreated {
			t.Fatalf("POST imagetransfers: %d %s", status, body)
		}
		if !strings.Contains(body, `<image id="`+diskID+`">`) || strings.Contains(body, "<disk") {
			t.Errorf("representation must name the disk in <image id>, not <disk>: %s", body)
		}
		if strings.Contains(body, "transfer_url") {
			t.Errorf("initializing transfer shows URLs: %s", body)
		}
		i := strings.Index(body, `id="`)
		id := body[i+4 : i+40]
		status, body = rc.do("POST", api+"/imagetransfers", "application/xml",
			`<image_transfer><direction>download</direction><disk id="`+diskID+`"></disk></image_transfer>`)
		if status != http.StatusConflict {
			t.Errorf("second transfer of a disk: %d %s, want 409", status, body)
		}
		status, body = rc.do("POST", api+"/imagetransfers/"+id+"/pause", "application/xml", "<action></action>")
		if status != http.StatusBadRequest || !strings.Contains(body, "Cannot pause image download") {
			t.Errorf("pause of a download: %d %s, want 400", status, body)
		}
		status, body = rc.do("POST", api+"/imagetransfers/"+id+"/resume", "application/xml", "<action></action>")
		if status != http.StatusConflict {
			t.Errorf("resume of a running transfer: %d %s, want 409", status, body)
		}
		waitFor(t, "transferring", func() bool { p, _ := sim.Transfer(id); return p == "transferring" })
		_, body = rc.do("GET", api+"/imagetransfers/"+id, "", "")
		if !strings.Contains(body, "<transfer_url>https://127.0.0.1:") || !strings.Contains(body, "<proxy_url>") {
			t.Errorf("transferring transfer without URLs: %s", body)
		}
		status, body = rc.do("POST", api+"/imagetransfers/"+id+"/extend", "application/xml", "<action></action>")
		if status != http.StatusOK || !strings.Contains(body, "<status>complete</status>") {
			t.Errorf("extend: %d %s", status, body)
		}
		status, body = rc.do("POST", api+"/imagetransfers/"+id+"/finalize", "application/xml", "<action></action>")
		if status != http.StatusOK || !strings.Contains(body, "<status>complete</status>") {
			t.Errorf("finalize: %d %s", status, body)
		}
		waitFor(t, "finished_success", func() bool { p, _ := sim.Transfer(id); return p == "finished_success" })
		_, body = rc.do("GET", api+"/imagetransfers", "", "")
		if !strings.Contains(body, `<image_transfers>`) || !strings.Contains(body, id) {
			t.Errorf("list does not hold the transfer: %s", body)
		}
		status, body = rc.do("POST", api+"/imagetransfers/"+id+"/cancel", "application/xml", "<action></action>")
		if status != http.StatusOK {
			t.Errorf("cancel of a finished transfer: %d %s, want 200 (ignored)", status, body)
		}
		// Retention (2 s in tests), then 404.
		waitFor(t, "transfer removed", func() bool { _, ok := sim.Transfer(id); return !ok })
		status, body = rc.do("GET", api+"/imagetransfers/"+id, "", "")
		if status != http.StatusNotFound || body != "" {
			t.Errorf("removed transfer: %d %q, want 404 with empty body", status, body)
		}
	})
	t.Run("remove disk", func(t *testing.T) {
		status, body := rc.do("DELETE", api+"/disks/"+diskID, "", "")
		if status != http.StatusOK {
			t.Errorf("DELETE: %d %s, want 200", status, body)
		}
		if _, ok := sim.Disk(diskID); ok {
			t.Error("disk still exists")
		}
	})
}

func TestPauseResume(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	d := newDisk(t, c, "raw", 1<<20)
	rc := newRawClient(t, sim)
	const api = "/ovirt-engine/api"
	status, body := rc.do("POST", api+"/imagetransfers", "application/xml",
		`<image_transfer><direction>upload</direction><disk id="`+d.ID+`"></disk><format>raw</format></image_transfer>`)
	if status != http.StatusCreated {
		t.Fatalf("POST imagetransfers: %d %s", status, body)
	}
	i := strings.Index(body, `id="`)
	id := body[i+4 : i+40]
	phase := func(want string) {
		t.Helper()
		waitFor(t, want, func() bool { p, _ := sim.Transfer(id); return p == want })
	}
	action := func(name string) {
		t.Helper()
		if status, body := rc.do("POST", api+"/imagetransfers/"+id+"/"+name, "application/xml", "<action></action>"); status != http.StatusOK {
			t.Fatalf("%s: %d %s", name, status, body)
		}
	}
	phase("transferring")
	action("pause")
	phase("paused_user")
	if _, body := rc.do("GET", api+"/imagetransfers/"+id, "", ""); strings.Contains(body, "transfer_url") {
		t.Errorf("paused transfer shows URLs: %s", body)
	}
	action("resume")
	phase("transferring")
	hc := imagesClient(t, sim)
	_, body = rc.do("GET", api+"/imagetransfers/"+id, "", "")
	start := strings.Index(body, "<transfer_url>") + len("<transfer_url>")
	end := strings.Index(body, "</transfer_url>")
	if start < len("<transfer_url>") || end < start {
		t.Fatalf("no transfer_url after resume: %s", body)
	}
	if err := put(t, hc, body[start:end], make([]byte, 4096)); err != nil {
		t.Errorf("PUT after resume: %v", err)
	}
	action("cancel")
	phase("finished_failure")
}

// TestCloseDuringTransfer closes the simulator while a transfer runs; the
// ticket is removed and qemu-nbd stopped (TestMain fails on a leftover
// qemu-nbd).
func TestCloseDuringTransfer(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	d := newDisk(t, c, "qcow2", 1<<20)
	tr, err := c.StartTransfer(t.Context(), engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if err != nil {
		t.Fatal(err)
	}
	hc := imagesClient(t, sim)
	if err := sim.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := put(t, hc, tr.TransferURL, []byte("x")); err == nil {
		t.Error("PUT after Close succeeded")
	}
}
