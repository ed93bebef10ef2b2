package endpoint

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// mustEndpoint is Validate that fails the test.
func mustEndpoint(t testing.TB, name, iface, ip, mac string) Endpoint {
	t.Helper()
	e, err := Validate(name, iface, ip, mac)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkIndexes is the ground truth of the indexes: every endpoint is found
// under each of its keys, and no index holds a key of no endpoint.
func checkIndexes(t testing.TB, r *Registry) {
	t.Helper()
	r.mu.RLock()
	defer r.mu.RUnlock()
	var bound, docker, named int
	for id, e := range r.byIdentity {
		if id != e.Identity {
			t.Errorf("endpoint %q stored under identity %d", e.Name, id)
		}
		for index, got := range map[string]uint32{
			"name":   r.byName[e.Name],
			"source": r.bySource[sourceKey{e.Network, e.IP}],
			"mac":    r.byMAC[macKey{e.Network, string(e.MAC)}],
		} {
			if got != id {
				t.Errorf("index by %s finds %d for endpoint %q (identity %d)", index, got, e.Name, id)
			}
		}
		// A reserved Docker endpoint has no interface until it is bound.
		if e.Interface != "" {
			named++
			if r.byInterface[e.Interface] != id {
				t.Errorf("index by interface finds %d for endpoint %q", r.byInterface[e.Interface], e.Name)
			}
		}
		if e.Ifindex != 0 {
			bound++
			if r.byIfindex[e.Ifindex] != id {
				t.Errorf("index by ifindex finds %d for endpoint %q", r.byIfindex[e.Ifindex], e.Name)
			}
		}
		if e.ContainerID != "" {
			docker++
			if r.byContainer[e.ContainerID] != id {
				t.Errorf("index by container finds %d for endpoint %q", r.byContainer[e.ContainerID], e.Name)
			}
		}
	}
	n := len(r.byIdentity)
	for index, size := range map[string][2]int{
		"name": {len(r.byName), n}, "interface": {len(r.byInterface), named}, "source": {len(r.bySource), n},
		"mac": {len(r.byMAC), n}, "ifindex": {len(r.byIfindex), bound}, "container": {len(r.byContainer), docker},
	} {
		if size[0] != size[1] {
			t.Errorf("index by %s has %d entries, want %d", index, size[0], size[1])
		}
	}
}

// wantFound checks every lookup for e: each finds it, or (gone) none does.
func wantFound(t testing.TB, r *Registry, e Endpoint, gone bool) {
	t.Helper()
	type result struct {
		ep Endpoint
		ok bool
	}
	got := map[string]result{}
	ep, err := r.Get(e.Name)
	got["Get"] = result{ep, err == nil}
	ep, ok := r.ByIdentity(e.Identity)
	got["ByIdentity"] = result{ep, ok}
	ep, ok = r.ByInterface(e.Interface)
	got["ByInterface"] = result{ep, ok}
	ep, ok = r.BySource(e.Network, e.IP)
	got["BySource"] = result{ep, ok}
	if e.Ifindex != 0 {
		ep, ok = r.ByIfindex(e.Ifindex)
		got["ByIfindex"] = result{ep, ok}
	}
	if e.ContainerID != "" {
		ep, ok = r.ByContainer(e.ContainerID)
		got["ByContainer"] = result{ep, ok}
	}
	for lookup, res := range got {
		switch {
		case gone && res.ok:
			t.Errorf("%s still finds removed endpoint %q: %+v", lookup, e.Name, res.ep)
		case !gone && !res.ok:
			t.Errorf("%s does not find endpoint %q", lookup, e.Name)
		case !gone && (res.ep.Identity != e.Identity || res.ep.Name != e.Name):
			t.Errorf("%s finds %q (identity %d), want %q (identity %d)", lookup, res.ep.Name, res.ep.Identity, e.Name, e.Identity)
		}
	}
}

// TestRegistryIndexes: after every Add, Bind and Remove, and after a
// reload, each lookup finds exactly what is registered; two networks may
// reuse an address and a MAC, one network may not.
func TestRegistryIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.json")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := mustEndpoint(t, "a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a")
	a.Ifindex = 7
	b := mustEndpoint(t, "b", "veth-b", "10.200.0.11", "02:00:00:00:00:0b") // unbound (older registry)
	c := mustEndpoint(t, "c", "veth-c", "10.200.0.10", "02:00:00:00:00:0a") // a's address and MAC, other network
	c.Network, c.Ifindex = "outcall1", 9
	d := mustEndpoint(t, "d", "veth-d", "10.200.0.12", "02:00:00:00:00:0d")
	d.Origin, d.ContainerID, d.Ifindex = OriginDocker, "3f1c0ffee", 11

	var added []Endpoint
	for _, e := range []Endpoint{a, b, c, d} {
		got, err := r.Add(e)
		if err != nil {
			t.Fatalf("Add(%s): %v", e.Name, err)
		}
		added = append(added, got)
		checkIndexes(t, r)
	}
	a, b, c, d = added[0], added[1], added[2], added[3]
	for _, tt := range []struct {
		e                   Endpoint
		network, container  string
		origin              Origin
		wantIdentityAtLeast uint32
	}{
		{a, "outcall0", "", OriginOperator, 1},
		{b, "outcall0", "", OriginOperator, 1},
		{c, "outcall1", "", OriginOperator, 1},
		{d, "outcall0", "3f1c0ffee", OriginDocker, 1},
	} {
		if tt.e.Network != tt.network || tt.e.Origin != tt.origin || tt.e.ContainerID != tt.container {
			t.Errorf("Add(%s) = network %q origin %q container %q, want %q %q %q", tt.e.Name, tt.e.Network, tt.e.Origin, tt.e.ContainerID, tt.network, tt.origin, tt.container)
		}
		wantFound(t, r, tt.e, false)
	}
	if got, ok := r.BySource("outcall1", a.IP); !ok || got.Name != "c" {
		t.Errorf(`BySource("outcall1", %s) = %q, %v; want c`, a.IP, got.Name, ok)
	}
	for _, miss := range []struct {
		network string
		ip      string
	}{
		{"", "10.200.0.10"},                // no network is no default
		{"outcall0", "::ffff:10.200.0.10"}, // mapped: the caller unmaps
		{"outcall2", "10.200.0.10"},
		{"outcall0", "10.200.0.99"},
	} {
		if got, ok := r.BySource(miss.network, netip.MustParseAddr(miss.ip)); ok {
			t.Errorf("BySource(%q, %s) = %q, want nothing", miss.network, miss.ip, got.Name)
		}
	}
	if _, ok := r.ByIfindex(0); ok {
		t.Error("ByIfindex(0) finds an unbound endpoint")
	}
	if _, ok := r.ByContainer(""); ok {
		t.Error(`ByContainer("") finds an operator's endpoint`)
	}

	b, err = r.Bind("b", 8)
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, r)
	wantFound(t, r, b, false)

	removed, err := r.Remove("d")
	if err != nil || removed.Identity != d.Identity {
		t.Fatalf("Remove(d) = %+v, %v", removed, err)
	}
	checkIndexes(t, r)
	wantFound(t, r, d, true)

	// A returned endpoint is a copy: changing its MAC changes nothing.
	got, _ := r.Get("a")
	got.MAC[5] = 0xee
	if again, _ := r.Get("a"); again.MAC.String() != "02:00:00:00:00:0a" {
		t.Fatalf("a caller's change reached the registry: %s", again.MAC)
	}

	r2, err := OpenWithOptions(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, r2)
	for _, e := range []Endpoint{a, b, c} {
		wantFound(t, r2, e, false)
	}
	wantFound(t, r2, d, true)
	if list := r2.List(); len(list) != 3 {
		t.Fatalf("reloaded registry = %+v, want a, b, c", list)
	}
}

// TestRegistryAddRefuses: each key that another endpoint holds is refused
// with its own error, and a refused Add changes nothing.
func TestRegistryAddRefuses(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	a := mustEndpoint(t, "a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a")
	a.Ifindex = 7
	a.Origin, a.ContainerID = OriginDocker, "c0ffee"
	if a, err = r.Add(a); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(e *Endpoint)
		wantErr string
	}{
		{"name", func(e *Endpoint) { e.Name = "a" }, `endpoint "a" already exists`},
		{"interface", func(e *Endpoint) { e.Interface = "veth-a" }, `interface veth-a already belongs to endpoint "a"`},
		{"ip", func(e *Endpoint) { e.IP = a.IP }, `ip 10.200.0.10 already belongs to endpoint "a"`},
		{"ip in the default network named", func(e *Endpoint) { e.IP, e.Network = a.IP, "outcall0" }, `ip 10.200.0.10 already belongs to endpoint "a"`},
		{"mac", func(e *Endpoint) { e.MAC = a.MAC }, `invalid mac "02:00:00:00:00:0a": already belongs to endpoint "a"`},
		{"ifindex", func(e *Endpoint) { e.Ifindex = 7 }, `ifindex 7 already belongs to endpoint "a"`},
		{"container", func(e *Endpoint) { e.Origin, e.ContainerID = OriginDocker, "c0ffee" }, `container c0ffee already belongs to endpoint "a"`},
		{"name before interface", func(e *Endpoint) { e.Name, e.Interface = "a", "veth-a" }, `endpoint "a" already exists`},
		{"operator with a container", func(e *Endpoint) { e.ContainerID = "beef" }, "an operator's endpoint has no container id"},
		{"unknown origin", func(e *Endpoint) { e.Origin = "kubernetes" }, `invalid origin "kubernetes"`},
		{"long network", func(e *Endpoint) { e.Network = "outcall-" + strings.Repeat("n", 65) }, `need a network name of 1-72 characters`},
		{"no mac", func(e *Endpoint) { e.MAC = nil; e.MACText = "" }, `invalid mac "": need a 6-byte`},
		{"no ip", func(e *Endpoint) { e.IP = netip.Addr{} }, "invalid ip"},
		{"ipv6", func(e *Endpoint) { e.IP = netip.MustParseAddr("fd00::1") }, `invalid ip "fd00::1"`},
		{"negative ifindex", func(e *Endpoint) { e.Ifindex = -1 }, "invalid ifindex -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEndpoint(t, "b", "veth-b", "10.200.0.11", "02:00:00:00:00:0b")
			tt.edit(&e)
			_, err := r.Add(e)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Add = %v, want %q", err, tt.wantErr)
			}
			if list := r.List(); len(list) != 1 {
				t.Fatalf("a refused Add changed the registry: %+v", list)
			}
			checkIndexes(t, r)
		})
	}
	// The same address and MAC in another network is another peer.
	e := mustEndpoint(t, "b", "veth-b", "10.200.0.10", "02:00:00:00:00:0a")
	e.Network = "outcall1"
	if _, err := r.Add(e); err != nil {
		t.Fatalf("Add of a's address in another network: %v", err)
	}
	checkIndexes(t, r)
}

// TestRegistryBind: Bind indexes the port once, and refuses a port that
// belongs to another endpoint or an endpoint already bound.
func TestRegistryBind(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	a := mustEndpoint(t, "a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a")
	a.Ifindex = 7
	for _, e := range []Endpoint{a, mustEndpoint(t, "b", "veth-b", "10.200.0.11", "02:00:00:00:00:0b")} {
		if _, err := r.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		ifindex int
		wantErr string
	}{
		{"unknown", 9, `endpoint not found: "x"`},
		{"a", 9, `endpoint "a" is already bound to ifindex 7`},
		{"b", 7, `ifindex 7 already belongs to endpoint "a"`},
		{"b", 0, "invalid ifindex 0"},
		{"b", 8, ""},
		{"b", 9, `endpoint "b" is already bound to ifindex 8`},
	}
	for _, tt := range tests {
		name := tt.name
		if name == "unknown" {
			name = "x"
		}
		_, err := r.Bind(name, tt.ifindex)
		if tt.wantErr == "" && err != nil {
			t.Errorf("Bind(%s, %d) = %v", name, tt.ifindex, err)
		}
		if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
			t.Errorf("Bind(%s, %d) = %v, want %q", name, tt.ifindex, err, tt.wantErr)
		}
		checkIndexes(t, r)
	}
	if e, ok := r.ByIfindex(8); !ok || e.Name != "b" {
		t.Fatalf("ByIfindex(8) = %q, %v; want b", e.Name, ok)
	}
}

// TestRegistryBindContainer: a Docker endpoint is reserved with no port,
// interface or container (two at once), bound to its container's port,
// moved to a new port when the container starts again, and never handed to
// another container or a taken port.
func TestRegistryBindContainer(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	op := mustEndpoint(t, "op", "veth-op", "10.200.0.9", "02:00:00:00:00:09")
	op.Ifindex = 5
	if _, err := r.Add(op); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"c1", "c2"} {
		e := Endpoint{Name: name, IP: netip.AddrFrom4([4]byte{10, 200, 0, byte(20 + i)}), MAC: net.HardwareAddr{2, 0x42, 0, 0, 0, byte(20 + i)}, Origin: OriginDocker}
		if _, err := r.Add(e); err != nil {
			t.Fatalf("reserve %s: %v", name, err)
		}
	}
	checkIndexes(t, r)
	tests := []struct {
		name, iface, container string
		ifindex                int
		wantErr                string
	}{
		{"x", "vethx", "cid-x", 9, `endpoint not found: "x"`},
		{"op", "vethop", "cid-op", 9, `endpoint "op" is not a Docker endpoint`},
		{"c2", "veth2", "", 12, ""}, // bound on the port's arrival, the id to come
		{"c1", "veth1", "cid-1", 0, "invalid ifindex 0"},
		{"c1", "veth-op", "cid-1", 9, `bind endpoint "c1": interface veth-op already belongs to endpoint "op"`},
		{"c1", "veth1", "cid-1", 5, `bind endpoint "c1": ifindex 5 already belongs to endpoint "op"`},
		{"c1", "veth1", "cid-1", 9, ""},
		{"c2", "veth2", "cid-1", 10, `bind endpoint "c2": container cid-1 already belongs to endpoint "c1"`},
		{"c1", "veth1b", "cid-other", 11, `endpoint "c1" belongs to container cid-1, not cid-other`},
		{"c1", "veth1b", "cid-1", 11, ""}, // started again: a new port
		{"c2", "veth2", "cid-2", 12, ""},  // the manager records the id
		{"c2", "veth2", "", 12, ""},       // and a later port-only bind keeps it
	}
	for _, tt := range tests {
		_, err := r.BindContainer(tt.name, tt.ifindex, tt.iface, tt.container)
		if tt.wantErr == "" && err != nil {
			t.Errorf("BindContainer(%s, %d, %s, %s) = %v", tt.name, tt.ifindex, tt.iface, tt.container, err)
		}
		if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
			t.Errorf("BindContainer(%s, %d, %s, %s) = %v, want %q", tt.name, tt.ifindex, tt.iface, tt.container, err, tt.wantErr)
		}
		checkIndexes(t, r)
	}
	if e, ok := r.ByIfindex(11); !ok || e.Name != "c1" || e.Interface != "veth1b" || e.ContainerID != "cid-1" {
		t.Errorf("ByIfindex(11) = %+v, %v; want c1 on veth1b", e, ok)
	}
	if _, ok := r.ByIfindex(9); ok {
		t.Error("the old port still names c1")
	}
	if e, ok := r.ByContainer("cid-1"); !ok || e.Name != "c1" {
		t.Errorf("ByContainer(cid-1) = %q, %v; want c1", e.Name, ok)
	}
	if e, ok := r.ByContainer("cid-2"); !ok || e.Name != "c2" || e.Ifindex != 12 {
		t.Errorf("ByContainer(cid-2) = %+v, %v; want c2 on 12", e, ok)
	}
	if _, ok := r.ByInterface(""); ok {
		t.Error("ByInterface(\"\") finds the unbound reservation")
	}
	// The reservation and the binding survive a reopen.
	r2, err := Open(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := r2.ByIfindex(11); !ok || e.Name != "c1" {
		t.Errorf("after reopen ByIfindex(11) = %q, %v", e.Name, ok)
	}
	if e, err := r2.Get("c2"); err != nil || e.Ifindex != 12 || e.ContainerID != "cid-2" {
		t.Errorf("after reopen c2 = %+v, %v; want bound to 12 for cid-2", e, err)
	}
}

// TestRegistryFailedSaveChangesNothing: when the file cannot be written,
// Add, Bind and Remove leave every index as it was.
func TestRegistryFailedSaveChangesNothing(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(filepath.Join(dir, "state", "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Add(mustEndpoint(t, "a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a"))
	if err != nil {
		t.Fatal(err)
	}
	// A file where the state directory was: MkdirAll fails, even for root.
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(mustEndpoint(t, "b", "veth-b", "10.200.0.11", "02:00:00:00:00:0b")); err == nil {
		t.Fatal("Add saved into a file")
	}
	if _, err := r.Bind("a", 7); err == nil {
		t.Fatal("Bind saved into a file")
	}
	if _, err := r.Remove("a"); err == nil {
		t.Fatal("Remove saved into a file")
	}
	checkIndexes(t, r)
	wantFound(t, r, a, false)
	if _, ok := r.ByInterface("veth-b"); ok {
		t.Error("the refused b is indexed")
	}
	if _, ok := r.ByIfindex(7); ok {
		t.Error("the refused bind is indexed")
	}
	if r.nextIdentity != a.Identity+1 {
		t.Errorf("next identity %d after a refused Add, want %d", r.nextIdentity, a.Identity+1)
	}
}

// TestRegistryLoad: files of every vintage load with their defaults, and
// a file whose entries collide is refused naming both endpoints.
func TestRegistryLoad(t *testing.T) {
	const (
		epA = `{"name":"a","interface":"veth-a","ip":"10.200.0.10","mac":"02:00:00:00:00:0a","identity":1`
		epB = `{"name":"b","interface":"veth-b","ip":"10.200.0.11","mac":"02:00:00:00:00:0b","identity":2`
	)
	file := func(next int, eps ...string) string {
		return fmt.Sprintf(`{"next_identity":%d,"endpoints":[%s]}`, next, strings.Join(eps, ","))
	}
	tests := []struct {
		name     string
		contents string
		network  string // Options.DefaultNetwork
		wantErr  string
		check    func(t *testing.T, r *Registry)
	}{
		{name: "before ifindex", contents: file(3, epA+`}`, epB+`}`), check: func(t *testing.T, r *Registry) {
			e, _ := r.Get("a")
			if e.Ifindex != 0 || e.Network != "outcall0" || e.Origin != OriginOperator || e.ContainerID != "" {
				t.Errorf("old record = %+v, want unbound, outcall0, operator", e)
			}
		}},
		{name: "before networks", contents: file(3, epA+`,"ifindex":7}`, epB+`,"ifindex":8}`), check: func(t *testing.T, r *Registry) {
			if e, ok := r.BySource("outcall0", netip.MustParseAddr("10.200.0.11")); !ok || e.Name != "b" || e.Ifindex != 8 {
				t.Errorf("BySource = %+v, %v", e, ok)
			}
		}},
		{name: "default network from the daemon", network: "lab0", contents: file(3, epA+`}`), check: func(t *testing.T, r *Registry) {
			if e, ok := r.BySource("lab0", netip.MustParseAddr("10.200.0.10")); !ok || e.Name != "a" {
				t.Errorf("BySource(lab0) = %+v, %v", e, ok)
			}
			if e, err := r.Add(mustEndpoint(t, "c", "veth-c", "10.200.0.12", "02:00:00:00:00:0c")); err != nil || e.Network != "lab0" {
				t.Errorf("Add = %+v, %v; want network lab0", e, err)
			}
		}},
		{name: "unknown fields", contents: `{"next_identity":5,"future":true,"endpoints":[` + epA + `,"ifindex":7,"colour":"red"}]}`, check: func(t *testing.T, r *Registry) {
			if e, err := r.Add(mustEndpoint(t, "c", "veth-c", "10.200.0.12", "02:00:00:00:00:0c")); err != nil || e.Identity != 5 {
				t.Errorf("Add = %+v, %v; want identity 5 from next_identity", e, err)
			}
		}},
		{name: "identity above next_identity", contents: file(1, epA+`}`, strings.Replace(epB, `"identity":2`, `"identity":9`, 1)+`}`), check: func(t *testing.T, r *Registry) {
			if e, err := r.Add(mustEndpoint(t, "c", "veth-c", "10.200.0.12", "02:00:00:00:00:0c")); err != nil || e.Identity != 10 {
				t.Errorf("Add = %+v, %v; want identity 10", e, err)
			}
		}},
		{name: "two networks reuse an address", contents: file(3, epA+`,"network":"outcall0"}`,
			`{"name":"b","interface":"veth-b","ip":"10.200.0.10","mac":"02:00:00:00:00:0a","identity":2,"network":"outcall1","origin":"docker","container_id":"c0ffee"}`),
			check: func(t *testing.T, r *Registry) {
				if e, ok := r.ByContainer("c0ffee"); !ok || e.Name != "b" || e.Origin != OriginDocker {
					t.Errorf("ByContainer = %+v, %v", e, ok)
				}
			}},
		{name: "one ifindex twice", contents: file(3, epA+`,"ifindex":7}`, epB+`,"ifindex":7}`),
			wantErr: `endpoints "a" and "b" have the same ifindex 7`},
		{name: "one address twice", contents: file(3, epA+`}`, strings.Replace(epB, "10.200.0.11", "10.200.0.10", 1)+`}`),
			wantErr: `endpoints "a" and "b" have the same ip 10.200.0.10`},
		{name: "one address twice, one network named", contents: file(3, epA+`}`, strings.Replace(epB, "10.200.0.11", "10.200.0.10", 1)+`,"network":"outcall0"}`),
			wantErr: `endpoints "a" and "b" have the same ip 10.200.0.10`},
		{name: "one mac twice", contents: file(3, epA+`}`, strings.Replace(epB, "02:00:00:00:00:0b", "02-00-00-00-00-0A", 1)+`}`),
			wantErr: `endpoints "a" and "b" have the same mac 02:00:00:00:00:0a`},
		{name: "one name twice", contents: file(3, epA+`}`, strings.Replace(epB, `"b"`, `"a"`, 1)+`}`),
			wantErr: `endpoints "a" and "a" have the same name "a"`},
		{name: "one interface twice", contents: file(3, epA+`}`, strings.Replace(epB, "veth-b", "veth-a", 1)+`}`),
			wantErr: `endpoints "a" and "b" have the same interface veth-a`},
		{name: "one identity twice", contents: file(3, epA+`}`, strings.Replace(epB, `"identity":2`, `"identity":1`, 1)+`}`),
			wantErr: `endpoints "a" and "b" have the same identity 1`},
		{name: "one container twice", contents: file(3, epA+`,"origin":"docker","container_id":"c0ffee"}`, epB+`,"origin":"docker","container_id":"c0ffee"}`),
			wantErr: `endpoints "a" and "b" have the same container c0ffee`},
		{name: "identity 0", contents: file(3, strings.Replace(epA, `"identity":1`, `"identity":0`, 1)+`}`),
			wantErr: `endpoint "a": identity 0`},
		{name: "unknown origin", contents: file(3, epA+`,"origin":"k8s"}`), wantErr: `endpoint "a": invalid origin "k8s"`},
		{name: "bad mac", contents: file(3, strings.Replace(epA, "02:00:00:00:00:0a", "zz", 1)+`}`), wantErr: `endpoint "a": address zz: invalid MAC address`},
		{name: "not json", contents: `{`, wantErr: "parse endpoint registry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "endpoints.json")
			if err := os.WriteFile(path, []byte(tt.contents), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := OpenWithOptions(Options{Path: path, DefaultNetwork: tt.network})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkIndexes(t, r)
			tt.check(t, r)
		})
	}
}

// TestRegistryConcurrent: Add, Get, the lookups and Remove from many
// goroutines (under -race) leave the indexes in step and every endpoint
// either fully registered or fully gone.
func TestRegistryConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "endpoints.json")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				// Half the workers contend for the same names and keys.
				slot := w*rounds + i
				if w%2 == 1 {
					slot = i
				}
				name := fmt.Sprintf("e%d", slot)
				e, err := Validate(name, fmt.Sprintf("veth%d", slot), fmt.Sprintf("10.200.%d.%d", slot/200, 10+slot%200),
					fmt.Sprintf("02:00:00:00:%02x:%02x", slot/256, slot%256))
				if err != nil {
					errs <- err
					return
				}
				e.Ifindex = 100 + slot
				added, err := r.Add(e)
				if err == nil {
					for _, found := range []bool{
						lookupOK(r.ByIdentity(added.Identity)),
						lookupOK(r.BySource(added.Network, added.IP)),
						lookupOK(r.ByIfindex(added.Ifindex)),
						lookupOK(r.ByInterface(added.Interface)),
					} {
						_ = found // another worker may have removed it already
					}
				}
				_, _ = r.Get(name)
				_ = r.List()
				if i%3 != 0 {
					_, _ = r.Remove(name)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkIndexes(t, r)
	r2, err := Open(path)
	if err != nil {
		t.Fatalf("reopen after the stress: %v", err)
	}
	checkIndexes(t, r2)
	if a, b := r.List(), r2.List(); len(a) != len(b) {
		t.Fatalf("%d endpoints in memory, %d on disk", len(a), len(b))
	}
	seen := map[uint32]bool{}
	for _, e := range r2.List() {
		if seen[e.Identity] {
			t.Fatalf("identity %d given twice", e.Identity)
		}
		seen[e.Identity] = true
	}
}

func lookupOK(_ Endpoint, ok bool) bool { return ok }
