package enginesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// maxRequestBody bounds the request bodies the simulator reads.
const maxRequestBody = 1 << 20

// maxRequestLog bounds the request log; older entries are dropped.
const maxRequestLog = 100000

// expiredTokenPage is what the engine answers to an API call with an
// expired SSO token (HTTP 401).
const expiredTokenPage = "<html><head><title>Error</title></head><body>invalid_grant: The provided authorization grant for the auth code has expired.</body></html>"

// response is what a handler answers.
type response struct {
	status int
	ctype  string
	body   []byte
	header map[string]string
}

func xmlResponse(status int, v any) response {
	b, err := marshal(v)
	if err != nil {
		return faultResponse(http.StatusInternalServerError, "Operation Failed", err.Error())
	}
	return response{status: status, ctype: "application/xml", body: b}
}

func faultResponse(status int, reason, detail string) response {
	b, _ := marshal(xmlFault{Reason: reason, Detail: detail})
	return response{status: status, ctype: "application/xml", body: b}
}

// operationFailed is the engine's validation fault: "[detail]".
func operationFailed(status int, detail string) response {
	return faultResponse(status, "Operation Failed", "["+detail+"]")
}

// notFound is the engine's 404: an empty body.
func notFound() response { return response{status: http.StatusNotFound} }

func jsonResponse(status int, v any) response {
	b, _ := json.Marshal(v)
	return response{status: status, ctype: "application/json", body: b}
}

// ServeHTTP implements the engine's REST API subset and SSO.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		http.Error(w, "reading request", http.StatusBadRequest)
		return
	}
	resp := s.route(r, body)
	for k, v := range resp.header {
		w.Header().Set(k, v)
	}
	if resp.ctype != "" {
		w.Header().Set("Content-Type", resp.ctype)
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(resp.body)))
	w.WriteHeader(resp.status)
	w.Write(resp.body)
	s.record(r, body, resp.status)
}

func (s *Sim) record(r *http.Request, body []byte, status int) {
	if strings.HasSuffix(r.URL.Path, "/sso/oauth/token") {
		if v, err := url.ParseQuery(string(body)); err == nil && v.Has("password") {
			v.Set("password", "***")
			body = []byte(v.Encode())
		}
	}
	req := Request{
		Time:   time.Now(),
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.RawQuery,
		Header: r.Header.Clone(),
		Body:   body,
		Status: status,
	}
	s.cfg.Logf("enginesim: %s %s?%s -> %d", r.Method, r.URL.Path, r.URL.RawQuery, status)
	s.mu.Lock()
	if len(s.requests) >= maxRequestLog {
		// Keep the newest half; a long-running simulator must not grow forever.
		s.requests = append(s.requests[:0], s.requests[len(s.requests)/2:]...)
	}
	s.requests = append(s.requests, req)
	s.mu.Unlock()
}

func (s *Sim) route(r *http.Request, body []byte) response {
	p := r.URL.Path
	switch {
	case p == "/ovirt-engine/sso/oauth/token":
		if r.Method != http.MethodPost {
			return response{status: http.StatusMethodNotAllowed, ctype: "text/plain", body: []byte("method not allowed\n")}
		}
		return s.ssoToken(body)
	case p == "/ovirt-engine/services/sso-logout":
		return jsonResponse(http.StatusOK, map[string]string{})
	case p == apiPrefix || strings.HasPrefix(p, apiPrefix+"/"):
	default:
		return response{status: http.StatusNotFound, ctype: "text/plain", body: []byte("not found\n")}
	}
	if resp, ok := s.checkToken(r); !ok {
		return resp
	}
	if r.Method == http.MethodGet && s.Faults().EmptyResponses {
		return response{status: http.StatusOK}
	}
	rest := strings.Trim(strings.TrimPrefix(p, apiPrefix), "/")
	parts := strings.Split(rest, "/")
	if rest == "" {
		parts = nil
	}
	get := r.Method == http.MethodGet
	post := r.Method == http.MethodPost
	switch {
	case len(parts) == 0 && get:
		return s.apiRoot()
	case len(parts) == 1 && parts[0] == "storagedomains" && get:
		return s.listStorageDomains(r.URL.Query())
	case len(parts) == 2 && parts[0] == "storagedomains" && get:
		return s.getStorageDomain(parts[1])
	case len(parts) == 1 && parts[0] == "hosts" && get:
		return xmlResponse(http.StatusOK, xmlHosts{Items: []xmlHost{s.hostXML()}})
	case len(parts) == 2 && parts[0] == "hosts" && get:
		if parts[1] != s.hostID {
			return notFound()
		}
		return xmlResponse(http.StatusOK, s.hostXML())
	case len(parts) == 1 && parts[0] == "datacenters" && get:
		return response{status: http.StatusOK, ctype: "application/xml", body: []byte("<data_centers/>\n")}
	case len(parts) == 1 && parts[0] == "jobs" && get:
		return response{status: http.StatusOK, ctype: "application/xml", body: []byte("<jobs/>\n")}
	case len(parts) == 1 && parts[0] == "disks" && post:
		return s.addDisk(body)
	case len(parts) == 1 && parts[0] == "disks" && get:
		return s.listDisks()
	case len(parts) == 2 && parts[0] == "disks" && get:
		return s.getDisk(parts[1])
	case len(parts) == 2 && parts[0] == "disks" && r.Method == http.MethodDelete:
		return s.removeDisk(parts[1])
	case len(parts) >= 3 && parts[0] == "vms":
		return s.routeVM(r.Method, parts, body)
	case len(parts) == 1 && parts[0] == "imagetransfers" && post:
		return s.addTransfer(body)
	case len(parts) == 1 && parts[0] == "imagetransfers" && get:
		return s.listTransfers()
	case len(parts) == 2 && parts[0] == "imagetransfers" && get:
		return s.getTransfer(parts[1])
	case len(parts) == 3 && parts[0] == "imagetransfers" && post:
		return s.transferAction(parts[1], parts[2])
	}
	if get || post || r.Method == http.MethodDelete {
		return notFound()
	}
	return faultResponse(http.StatusMethodNotAllowed, "Method Not Allowed", r.Method+" "+p)
}

// ssoToken answers the SSO password grant (engine-api reference §2).
func (s *Sim) ssoToken(body []byte) response {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return jsonResponse(http.StatusBadRequest, map[string]string{"error_code": "invalid_request", "error": "Cannot parse request"})
	}
	if form.Get("grant_type") != "password" {
		return jsonResponse(http.StatusBadRequest, map[string]string{"error_code": "unsupported_grant_type", "error": "The authorization grant type is not supported by the authorization server."})
	}
	if form.Get("scope") == "" {
		return jsonResponse(http.StatusBadRequest, map[string]string{"error_code": "invalid_request", "error": "The request is missing a required parameter: scope."})
	}
	user := form.Get("username")
	if user != s.Username || form.Get("password") != s.Password {
		return jsonResponse(http.StatusBadRequest, map[string]string{
			"error_code": "access_denied",
			"error":      fmt.Sprintf("Cannot authenticate user '%s': The username or password is incorrect..", user),
		})
	}
	token := randomHex(20)
	s.mu.Lock()
	now := time.Now()
	for t, e := range s.tokens {
		if !e.IsZero() && now.Sub(e) > time.Hour {
			delete(s.tokens, t) // long expired; an unknown token gets the same 401
		}
	}
	var exp time.Time
	if lt := s.faults.TokenLifetime; lt > 0 {
		exp = time.Now().Add(lt)
	}
	s.tokens[token] = exp
	s.mu.Unlock()
	expMillis := exp
	if expMillis.IsZero() {
		expMillis = time.Now().Add(100 * time.Hour)
	}
	return jsonResponse(http.StatusOK, map[string]string{
		"access_token": token,
		"scope":        form.Get("scope"),
		"exp":          fmt.Sprint(expMillis.UnixMilli()),
		"token_type":   "bearer",
	})
}

// checkToken checks the bearer token of an API call.
func (s *Sim) checkToken(r *http.Request) (response, bool) {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[token]
	s.mu.Unlock()
	if !ok || !known || (!exp.IsZero() && time.Now().After(exp)) {
		return response{status: http.StatusUnauthorized, ctype: "text/html", body: []byte(expiredTokenPage)}, false
	}
	return response{}, true
}

func (s *Sim) apiRoot() response {
	var a xmlAPI
	for _, rel := range []string{"disks", "hosts", "imagetransfers", "jobs", "storagedomains"} {
		a.Links = append(a.Links, xmlLink{Href: apiPrefix + "/" + rel, Rel: rel})
	}
	a.Links = append(a.Links, xmlLink{Href: apiPrefix + "/storagedomains?search={query}", Rel: "storagedomains/search"})
	a.ProductInfo.InstanceID = s.dcID
	a.ProductInfo.Name = "oVirt Engine (enginesim)"
	a.ProductInfo.Version.Build = 5
	a.ProductInfo.Version.FullVersion = "4.5.5-1.enginesim"
	a.ProductInfo.Version.Major = 4
	a.ProductInfo.Version.Minor = 5
	a.Time = time.Now().Format(time.RFC3339Nano)
	user := "0b1c2d3e-0000-0000-0000-000000000001"
	a.AuthenticatedUser = xmlRef{Href: apiPrefix + "/users/" + user, ID: user}
	a.EffectiveUser = a.AuthenticatedUser
	return xmlResponse(http.StatusOK, a)
}

func (s *Sim) hostXML() xmlHost {
	return xmlHost{Href: apiPrefix + "/hosts/" + s.hostID, ID: s.hostID, Name: "host1", Address: "127.0.0.1", Status: "up"}
}

func (s *Sim) sdXML(name string) xmlStorageDomain {
	id := s.sdIDs[name]
	sd := xmlStorageDomain{
		Href: apiPrefix + "/storagedomains/" + id, ID: id, Name: name,
		Available: 1 << 40, ExternalStatus: "ok", Master: name == s.sdNames[0],
		Status: "active", Storage: xmlStorage{Path: "/" + name, Type: s.sdTypes[name]},
		StorageFormat: "v5", Type: "data",
	}
	sd.DataCenters.DataCenter = []xmlRef{{Href: apiPrefix + "/datacenters/" + s.dcID, ID: s.dcID}}
	return sd
}

// listStorageDomains answers GET /storagedomains[?search=name%3DX][&case_sensitive=B].
func (s *Sim) listStorageDomains(q url.Values) response {
	pattern, hasName := searchName(q.Get("search"))
	caseSensitive := false
	if v := q.Get("case_sensitive"); v != "" {
		caseSensitive = strings.EqualFold(v, "true")
	}
	var out xmlStorageDomains
	for _, n := range s.sdNames {
		if hasName && !matchName(pattern, n, caseSensitive) {
			continue
		}
		out.Items = append(out.Items, s.sdXML(n))
	}
	if max := q.Get("max"); max != "" {
		var m int
		if _, err := fmt.Sscan(max, &m); err == nil && m >= 0 && m < len(out.Items) {
			out.Items = out.Items[:m]
		}
	}
	return xmlResponse(http.StatusOK, out)
}

// searchName returns the value of a "name=VALUE" search query.
func searchName(search string) (string, bool) {
	search = strings.TrimSpace(search)
	k, v, ok := strings.Cut(search, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(k), "name") {
		return "", false
	}
	return strings.Trim(strings.TrimSpace(v), `"`), true
}

// matchName matches name against an engine search value, where "*" is a
// wildcard for any run of characters.
func matchName(pattern, name string, caseSensitive bool) bool {
	if !caseSensitive {
		pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	}
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	first, last := parts[0], parts[len(parts)-1]
	if !strings.HasPrefix(name, first) {
		return false
	}
	name = name[len(first):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return strings.HasSuffix(name, last)
}

func (s *Sim) getStorageDomain(id string) response {
	for n, sid := range s.sdIDs {
		if sid == id {
			return xmlResponse(http.StatusOK, s.sdXML(n))
		}
	}
	return notFound()
}

// sortedKeys returns the keys of m in order, for stable lists.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// errorResponse maps a handler error to a fault.
func errorResponse(err error) response {
	if errors.Is(err, errBadRequest) {
		return faultResponse(http.StatusBadRequest, "Incomplete parameters", strings.TrimPrefix(err.Error(), errBadRequest.Error()+": "))
	}
	return faultResponse(http.StatusInternalServerError, "Operation Failed", err.Error())
}
