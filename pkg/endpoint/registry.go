// Package endpoint keeps the registry of named endpoints: ports on Outcall
// bridges (a namespace's veth, a microVM's tap) with the identity the
// datapath knows them by. The registry is persisted so that names and
// identities survive a daemon restart.
package endpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"

	"outcall.dev/outcall/internal/atomicfile"
)

// Endpoint is one registered port.
type Endpoint struct {
	Name      string           `json:"name"`
	Interface string           `json:"interface"`
	IP        netip.Addr       `json:"ip"`
	MAC       net.HardwareAddr `json:"-"`
	MACText   string           `json:"mac"`
	Identity  uint32           `json:"identity"`
	// Ifindex is the port the endpoint was registered on. Identity is the
	// port itself, not its name: a new port given an old port's name is
	// another port and inherits nothing, and a renamed port keeps its
	// identity. 0 in a registry written before this field existed; the
	// daemon binds such an endpoint to the port it finds under its name.
	Ifindex int `json:"ifindex,omitempty"`
}

// ErrNotFound is returned for an unknown endpoint name.
var ErrNotFound = errors.New("endpoint not found")

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate checks an endpoint's fields before anything is stored.
func Validate(name, iface, ip, mac string) (Endpoint, error) {
	if !namePattern.MatchString(name) {
		return Endpoint{}, fmt.Errorf("invalid endpoint name %q: use 1-64 letters, digits, '_', '-', '.', starting with a letter or digit", name)
	}
	if iface == "" || len(iface) > 15 {
		return Endpoint{}, fmt.Errorf("invalid interface %q: need an interface name of 1-15 characters", iface)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return Endpoint{}, fmt.Errorf("invalid ip %q: need an IPv4 address", ip)
	}
	hw, err := ValidateMAC(mac)
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Name: name, Interface: iface, IP: addr, MAC: hw, MACText: hw.String()}, nil
}

// ValidateMAC parses an endpoint's MAC and refuses what no single port may
// claim: the datapath matches a port's frames and the bridge forwards
// frames to it by this address, so a group address (broadcast, multicast)
// or the all-zero address would make it receive, or be blamed for, frames
// that are not its own.
func ValidateMAC(mac string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("invalid mac %q: need a 6-byte Ethernet address", mac)
	}
	switch {
	case bytes.Equal(hw, net.HardwareAddr{0, 0, 0, 0, 0, 0}):
		return nil, fmt.Errorf("invalid mac %q: all-zero address", mac)
	case bytes.Equal(hw, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}):
		return nil, fmt.Errorf("invalid mac %q: broadcast address", mac)
	case hw[0]&1 == 1:
		return nil, fmt.Errorf("invalid mac %q: multicast address (the low bit of the first byte is set)", mac)
	}
	return hw, nil
}

// Registry is the persisted set of endpoints. Safe for concurrent use.
type Registry struct {
	path string

	mu           sync.Mutex
	endpoints    map[string]Endpoint
	nextIdentity uint32
}

type state struct {
	NextIdentity uint32     `json:"next_identity"`
	Endpoints    []Endpoint `json:"endpoints"`
}

// Open loads the registry from path, creating an empty one if the file does
// not exist.
func Open(path string) (*Registry, error) {
	r := &Registry{path: path, endpoints: map[string]Endpoint{}, nextIdentity: 1}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read endpoint registry: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse endpoint registry %s: %w", path, err)
	}
	for _, e := range s.Endpoints {
		e.MAC, err = net.ParseMAC(e.MACText)
		if err != nil {
			return nil, fmt.Errorf("endpoint registry %s: endpoint %q: %w", path, e.Name, err)
		}
		r.endpoints[e.Name] = e
		r.nextIdentity = max(r.nextIdentity, e.Identity+1)
	}
	r.nextIdentity = max(r.nextIdentity, s.NextIdentity)
	return r, nil
}

// Add registers e under a fresh identity. Names, interfaces, addresses and
// MACs must be unique: two endpoints can never share a port or a source
// address, and the bridge would deliver one's frames to the other if they
// shared a MAC.
func (r *Registry) Add(e Endpoint) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.endpoints {
		switch {
		case o.Name == e.Name:
			return Endpoint{}, fmt.Errorf("endpoint %q already exists", e.Name)
		case o.Interface == e.Interface:
			return Endpoint{}, fmt.Errorf("interface %s already belongs to endpoint %q", e.Interface, o.Name)
		case o.IP == e.IP:
			return Endpoint{}, fmt.Errorf("ip %s already belongs to endpoint %q", e.IP, o.Name)
		case len(e.MAC) > 0 && bytes.Equal(o.MAC, e.MAC):
			return Endpoint{}, fmt.Errorf("invalid mac %q: already belongs to endpoint %q", e.MAC.String(), o.Name)
		}
	}
	e.Identity = r.nextIdentity
	r.endpoints[e.Name] = e
	r.nextIdentity++
	if err := r.saveLocked(); err != nil {
		delete(r.endpoints, e.Name)
		r.nextIdentity--
		return Endpoint{}, err
	}
	return e, nil
}

// Remove deletes the endpoint and returns what was removed.
func (r *Registry) Remove(name string) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.endpoints[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	delete(r.endpoints, name)
	if err := r.saveLocked(); err != nil {
		r.endpoints[name] = e
		return Endpoint{}, err
	}
	return e, nil
}

// Get returns the endpoint with this name.
func (r *Registry) Get(name string) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.endpoints[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return e, nil
}

// ByInterface returns the endpoint on the named interface.
func (r *Registry) ByInterface(iface string) (Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.endpoints {
		if e.Interface == iface {
			return e, true
		}
	}
	return Endpoint{}, false
}

// ByIfindex returns the endpoint registered on the port with this ifindex.
func (r *Registry) ByIfindex(ifindex int) (Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.endpoints {
		if e.Ifindex != 0 && e.Ifindex == ifindex {
			return e, true
		}
	}
	return Endpoint{}, false
}

// Bind records the port of an endpoint that has none yet (written by an
// older version), and persists it.
func (r *Registry) Bind(name string, ifindex int) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.endpoints[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if e.Ifindex != 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q is already bound to ifindex %d", name, e.Ifindex)
	}
	e.Ifindex = ifindex
	r.endpoints[name] = e
	if err := r.saveLocked(); err != nil {
		e.Ifindex = 0
		r.endpoints[name] = e
		return Endpoint{}, err
	}
	return e, nil
}

// ByIdentity returns the endpoint with this identity.
func (r *Registry) ByIdentity(id uint32) (Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.endpoints {
		if e.Identity == id {
			return e, true
		}
	}
	return Endpoint{}, false
}

// List returns the endpoints sorted by name.
func (r *Registry) List() []Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Endpoint, 0, len(r.endpoints))
	for _, e := range r.endpoints {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// saveLocked writes the registry atomically, so a crash leaves either the
// old or the new file, never a torn one.
func (r *Registry) saveLocked() error {
	s := state{NextIdentity: r.nextIdentity, Endpoints: make([]Endpoint, 0, len(r.endpoints))}
	for _, e := range r.endpoints {
		s.Endpoints = append(s.Endpoints, e)
	}
	sort.Slice(s.Endpoints, func(i, j int) bool { return s.Endpoints[i].Name < s.Endpoints[j].Name })
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("save endpoint registry: %w", err)
	}
	if err := atomicfile.WriteFile(r.path, b); err != nil {
		return fmt.Errorf("save endpoint registry: %w", err)
	}
	return nil
}
