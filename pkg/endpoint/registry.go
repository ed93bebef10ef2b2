// Package endpoint keeps the registry of named endpoints: ports on Outcall
// bridges (a namespace's veth, a microVM's tap, a container's veth) with the
// identity the datapath knows them by. The registry is persisted so that
// names and identities survive a daemon restart, and indexed so that every
// enforcer finds the same identity for a peer: the datapath by port
// (ifindex), the DNS filter, the proxy and the agent API by source address
// on a network, the operator by name, Docker by container id.
package endpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"

	"outcall.dev/outcall/internal/atomicfile"
	"outcall.dev/outcall/pkg/api"
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
	// Network is the Outcall network of the endpoint's port
	// ("outcall-default"). Source addresses and MACs are unique within a network, not
	// across networks: two bridges are two segments, and a peer is found
	// by the network it spoke on and its address there. Empty in a
	// registry written before networks existed, and in an Add that names
	// none: the registry's default network.
	Network string `json:"network"`
	// ContainerID is the Docker container whose port this is; empty for
	// an operator's endpoint.
	ContainerID string `json:"container_id,omitempty"`
	// Origin records who made the identity. Empty in an Add, and in a
	// registry written before origins existed: OriginOperator.
	Origin Origin `json:"origin"`
}

// Origin is where an endpoint's identity came from.
type Origin string

const (
	// OriginOperator is an endpoint registered by the operator (`outcall
	// endpoint add`). It has no container id.
	OriginOperator Origin = "operator"
	// OriginDocker is a container's port on an Outcall network, registered
	// from Docker's events. It has a container id.
	OriginDocker Origin = "docker"
)

// clone returns e with a MAC of its own, so that nothing a caller does to
// a returned endpoint reaches the registry or another caller.
func (e Endpoint) clone() Endpoint {
	e.MAC = slices.Clone(e.MAC)
	return e
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

// Registry is the persisted set of endpoints, indexed by every key a peer
// is looked up by. Safe for concurrent use.
//
// Each index is also a uniqueness rule: no two endpoints share a name, an
// interface, a bound ifindex, a container id or an identity, nor a source
// address or a MAC within one network. Add and Bind refuse what would
// break one, and Open refuses a file that breaks one.
type Registry struct {
	path           string
	defaultNetwork string

	mu           sync.RWMutex
	nextIdentity uint32
	// The endpoints and every index into them, changed only together (by
	// indexLocked and unindexLocked) under mu.
	byIdentity  map[uint32]Endpoint
	byName      map[string]uint32
	byInterface map[string]uint32
	byIfindex   map[int]uint32 // bound endpoints only
	bySource    map[sourceKey]uint32
	byMAC       map[macKey]uint32
	byContainer map[string]uint32 // Docker endpoints only
}

// sourceKey is a source address in one network.
type sourceKey struct {
	network string
	ip      netip.Addr
}

// macKey is a MAC in one network; mac holds the address's bytes, so every
// spelling of one address is one key.
type macKey struct {
	network string
	mac     string
}

type state struct {
	NextIdentity uint32     `json:"next_identity"`
	Endpoints    []Endpoint `json:"endpoints"`
}

// Options configures OpenWithOptions.
type Options struct {
	// Path is the registry file (endpoints.json); it is created on the
	// first change if it does not exist.
	Path string
	// DefaultNetwork is the bridge of the default network: the network of
	// an endpoint whose record, or whose Add, names none.
	// api.DefaultBridgeName if empty.
	DefaultNetwork string
}

// Open loads the registry from path, creating an empty one if the file does
// not exist. The default network is api.DefaultBridgeName.
func Open(path string) (*Registry, error) {
	return OpenWithOptions(Options{Path: path})
}

// OpenWithOptions loads the registry from o.Path, creating an empty one if
// the file does not exist. Records written before networks and origins
// existed belong to the default network and to the operator. A file in
// which two endpoints collide on any index is refused with an error that
// names both: a peer must never be found as two identities.
func OpenWithOptions(o Options) (*Registry, error) {
	if o.DefaultNetwork == "" {
		o.DefaultNetwork = api.DefaultBridgeName
	}
	if err := validateNetwork(o.DefaultNetwork); err != nil {
		return nil, fmt.Errorf("endpoint registry: default network: %w", err)
	}
	r := &Registry{
		path:           o.Path,
		defaultNetwork: o.DefaultNetwork,
		nextIdentity:   1,
		byIdentity:     map[uint32]Endpoint{},
		byName:         map[string]uint32{},
		byInterface:    map[string]uint32{},
		byIfindex:      map[int]uint32{},
		bySource:       map[sourceKey]uint32{},
		byMAC:          map[macKey]uint32{},
		byContainer:    map[string]uint32{},
	}
	b, err := os.ReadFile(o.Path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read endpoint registry: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse endpoint registry %s: %w", o.Path, err)
	}
	for _, e := range s.Endpoints {
		e.MAC, err = net.ParseMAC(e.MACText)
		if err != nil {
			return nil, fmt.Errorf("endpoint registry %s: endpoint %q: %w", o.Path, e.Name, err)
		}
		e = r.withDefaults(e)
		if e.Identity == 0 {
			return nil, fmt.Errorf("endpoint registry %s: endpoint %q: identity 0", o.Path, e.Name)
		}
		if err := check(e); err != nil {
			return nil, fmt.Errorf("endpoint registry %s: endpoint %q: %w", o.Path, e.Name, err)
		}
		if c, ok := r.clashLocked(e); ok {
			return nil, fmt.Errorf("endpoint registry %s: endpoints %q and %q have the same %s %s", o.Path, c.other.Name, e.Name, c.field, c.value)
		}
		r.indexLocked(e)
		if e.Identity == math.MaxUint32 {
			r.nextIdentity = 0 // exhausted: Add refuses
		} else if r.nextIdentity != 0 {
			r.nextIdentity = max(r.nextIdentity, e.Identity+1)
		}
	}
	if r.nextIdentity != 0 {
		r.nextIdentity = max(r.nextIdentity, s.NextIdentity)
	}
	return r, nil
}

// withDefaults fills what a record or an Add may leave out: the network,
// the origin and the MAC's text; and gives e a MAC of its own.
func (r *Registry) withDefaults(e Endpoint) Endpoint {
	e = e.clone()
	if e.Network == "" {
		e.Network = r.defaultNetwork
	}
	if e.Origin == "" {
		e.Origin = OriginOperator
	}
	if len(e.MAC) > 0 {
		e.MACText = e.MAC.String()
	}
	return e
}

// check refuses an endpoint the indexes could not hold or that contradicts
// its origin.
func check(e Endpoint) error {
	if !e.IP.Is4() {
		return fmt.Errorf("invalid ip %q: need an IPv4 address", e.IP)
	}
	if len(e.MAC) != 6 {
		return fmt.Errorf("invalid mac %q: need a 6-byte Ethernet address", e.MACText)
	}
	if e.Ifindex < 0 {
		return fmt.Errorf("invalid ifindex %d", e.Ifindex)
	}
	if err := validateNetwork(e.Network); err != nil {
		return err
	}
	switch e.Origin {
	case OriginOperator:
		if e.ContainerID != "" {
			return fmt.Errorf("an operator's endpoint has no container id (got %q)", e.ContainerID)
		}
	case OriginDocker:
		// Reserved before the container exists, a Docker endpoint gets
		// its port when the port appears and its container id when the
		// manager binds it, in either order.
	default:
		return fmt.Errorf("invalid origin %q: need %q or %q", e.Origin, OriginOperator, OriginDocker)
	}
	return nil
}

// maxNetworkLen is the longest network name: "outcall-" and a suffix of at
// most 64 characters (S002-FR-011).
const maxNetworkLen = 8 + 64

// validateNetwork checks a network's name ("outcall-default").
func validateNetwork(network string) error {
	if network == "" || len(network) > maxNetworkLen {
		return fmt.Errorf("invalid network %q: need a network name of 1-%d characters", network, maxNetworkLen)
	}
	return nil
}

// clash is a key an endpoint would share with one already registered.
type clash struct {
	field string // "name", "interface", "ip", "mac", "ifindex", "container", "identity"
	value string
	other Endpoint
}

// addError is Add's error for the clash.
func (c clash) addError() error {
	switch c.field {
	case "name":
		return fmt.Errorf("endpoint %s already exists", c.value)
	case "mac":
		return fmt.Errorf("invalid mac %q: already belongs to endpoint %q", c.value, c.other.Name)
	default:
		return fmt.Errorf("%s %s already belongs to endpoint %q", c.field, c.value, c.other.Name)
	}
}

// clashLocked finds the first key of e that another endpoint holds, in the
// order Add has always reported them: name, interface, address, MAC; then
// the keys that came later.
func (r *Registry) clashLocked(e Endpoint) (clash, bool) {
	found := func(field, value string, id uint32, ok bool) (clash, bool) {
		if !ok {
			return clash{}, false
		}
		return clash{field: field, value: value, other: r.byIdentity[id]}, true
	}
	if id, ok := r.byName[e.Name]; ok {
		return found("name", strconv.Quote(e.Name), id, ok)
	}
	if id, ok := r.byInterface[e.Interface]; ok && e.Interface != "" {
		return found("interface", e.Interface, id, ok)
	}
	if id, ok := r.bySource[sourceKey{e.Network, e.IP}]; ok {
		return found("ip", e.IP.String(), id, ok)
	}
	if id, ok := r.byMAC[macKey{e.Network, string(e.MAC)}]; ok && len(e.MAC) > 0 {
		return found("mac", e.MAC.String(), id, ok)
	}
	if id, ok := r.byIfindex[e.Ifindex]; ok && e.Ifindex != 0 {
		return found("ifindex", strconv.Itoa(e.Ifindex), id, ok)
	}
	if id, ok := r.byContainer[e.ContainerID]; ok && e.ContainerID != "" {
		return found("container", e.ContainerID, id, ok)
	}
	if _, ok := r.byIdentity[e.Identity]; ok {
		return found("identity", strconv.FormatUint(uint64(e.Identity), 10), e.Identity, ok)
	}
	return clash{}, false
}

// indexLocked stores e under every key it has; clashLocked has found none
// taken.
func (r *Registry) indexLocked(e Endpoint) {
	r.byIdentity[e.Identity] = e
	r.byName[e.Name] = e.Identity
	if e.Interface != "" {
		r.byInterface[e.Interface] = e.Identity
	}
	r.bySource[sourceKey{e.Network, e.IP}] = e.Identity
	r.byMAC[macKey{e.Network, string(e.MAC)}] = e.Identity
	if e.Ifindex != 0 {
		r.byIfindex[e.Ifindex] = e.Identity
	}
	if e.ContainerID != "" {
		r.byContainer[e.ContainerID] = e.Identity
	}
}

// unindexLocked removes e, as indexLocked stored it, from every index.
func (r *Registry) unindexLocked(e Endpoint) {
	delete(r.byIdentity, e.Identity)
	delete(r.byName, e.Name)
	if e.Interface != "" {
		delete(r.byInterface, e.Interface)
	}
	delete(r.bySource, sourceKey{e.Network, e.IP})
	delete(r.byMAC, macKey{e.Network, string(e.MAC)})
	if e.Ifindex != 0 {
		delete(r.byIfindex, e.Ifindex)
	}
	if e.ContainerID != "" {
		delete(r.byContainer, e.ContainerID)
	}
}

// Add registers e under a fresh identity, in e.Network (the default network
// if empty), with e.Origin (OriginOperator if empty). Names, interfaces,
// bound ports, container ids, and addresses and MACs within a network must
// be unique: two endpoints can never share a port or a source address, and
// the bridge would deliver one's frames to the other if they shared a MAC.
func (r *Registry) Add(e Endpoint) (Endpoint, error) {
	e = r.withDefaults(e)
	r.mu.Lock()
	defer r.mu.Unlock()
	e.Identity = r.nextIdentity
	if c, ok := r.clashLocked(e); ok {
		return Endpoint{}, c.addError()
	}
	if err := check(e); err != nil {
		return Endpoint{}, err
	}
	if r.nextIdentity == 0 {
		return Endpoint{}, errors.New("no endpoint identity left")
	}
	r.indexLocked(e)
	r.nextIdentity++
	if err := r.saveLocked(); err != nil {
		r.unindexLocked(e)
		r.nextIdentity = e.Identity
		return Endpoint{}, err
	}
	return e.clone(), nil
}

// Remove deletes the endpoint and returns what was removed.
func (r *Registry) Remove(name string) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.byName[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	e := r.byIdentity[id]
	r.unindexLocked(e)
	if err := r.saveLocked(); err != nil {
		r.indexLocked(e)
		return Endpoint{}, err
	}
	return e.clone(), nil
}

// Get returns the endpoint with this name.
func (r *Registry) Get(name string) (Endpoint, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byName[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return r.byIdentity[id].clone(), nil
}

// lookup returns the endpoint an index entry names.
func (r *Registry) lookup(id uint32, ok bool) (Endpoint, bool) {
	if !ok {
		return Endpoint{}, false
	}
	return r.byIdentity[id].clone(), true
}

// ByInterface returns the endpoint registered on the named interface (the
// name it was registered under; a renamed port is found by ByIfindex).
func (r *Registry) ByInterface(iface string) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byInterface[iface]
	return r.lookup(id, ok && iface != "")
}

// ByIfindex returns the endpoint registered on the port with this ifindex.
func (r *Registry) ByIfindex(ifindex int) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byIfindex[ifindex]
	return r.lookup(id, ok && ifindex != 0)
}

// BySource returns the endpoint that owns source address ip on network
// (a network name such as "outcall-default"): the peer of a DNS query, a proxy connection or an agent
// API call. The match is exact: an IPv4-mapped IPv6 address or an empty
// network finds nothing, so a caller cannot be defaulted into an identity;
// a caller on a dual-stack socket unmaps the peer's address first.
func (r *Registry) BySource(network string, ip netip.Addr) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.bySource[sourceKey{network, ip}]
	return r.lookup(id, ok)
}

// ByContainer returns the endpoint of the Docker container with this id.
func (r *Registry) ByContainer(containerID string) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byContainer[containerID]
	return r.lookup(id, ok && containerID != "")
}

// Bind records the port of an endpoint that has none yet (written by an
// older version), and persists it. A port belongs to one endpoint only.
func (r *Registry) Bind(name string, ifindex int) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.byName[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	e := r.byIdentity[id]
	if e.Ifindex != 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q is already bound to ifindex %d", name, e.Ifindex)
	}
	if ifindex <= 0 {
		return Endpoint{}, fmt.Errorf("invalid ifindex %d", ifindex)
	}
	if other, taken := r.byIfindex[ifindex]; taken {
		return Endpoint{}, fmt.Errorf("ifindex %d already belongs to endpoint %q", ifindex, r.byIdentity[other].Name)
	}
	unbound := e
	e.Ifindex = ifindex
	r.byIdentity[id] = e
	r.byIfindex[ifindex] = id
	if err := r.saveLocked(); err != nil {
		delete(r.byIfindex, ifindex)
		r.byIdentity[id] = unbound
		return Endpoint{}, err
	}
	return e.clone(), nil
}

// BindContainer ties a Docker endpoint, reserved before its container
// existed, to the container's port (ifindex, named iface) and records the
// container's id ("" keeps the one recorded, if any: the port can be
// found before the manager knows the container started), and persists it. A container that starts again gets a
// new port: the endpoint moves to it. The container id, once recorded,
// never changes: another container is another endpoint.
func (r *Registry) BindContainer(name string, ifindex int, iface, containerID string) (Endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.byName[name]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	e := r.byIdentity[id]
	switch {
	case e.Origin != OriginDocker:
		return Endpoint{}, fmt.Errorf("endpoint %q is not a Docker endpoint", name)
	case ifindex <= 0:
		return Endpoint{}, fmt.Errorf("invalid ifindex %d", ifindex)
	case containerID == "":
		containerID = e.ContainerID // bound on the port's arrival: the id comes later
	case e.ContainerID != "" && e.ContainerID != containerID:
		return Endpoint{}, fmt.Errorf("endpoint %q belongs to container %s, not %s", name, e.ContainerID, containerID)
	}
	bound := e
	bound.Ifindex, bound.Interface, bound.ContainerID = ifindex, iface, containerID
	r.unindexLocked(e)
	if c, ok := r.clashLocked(bound); ok {
		r.indexLocked(e)
		return Endpoint{}, fmt.Errorf("bind endpoint %q: %s %s already belongs to endpoint %q", name, c.field, c.value, c.other.Name)
	}
	r.indexLocked(bound)
	if err := r.saveLocked(); err != nil {
		r.unindexLocked(bound)
		r.indexLocked(e)
		return Endpoint{}, err
	}
	return bound.clone(), nil
}

// ByIdentity returns the endpoint with this identity.
func (r *Registry) ByIdentity(id uint32) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byIdentity[id]
	if !ok {
		return Endpoint{}, false
	}
	return e.clone(), true
}

// List returns the endpoints sorted by name.
func (r *Registry) List() []Endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.listLocked()
}

func (r *Registry) listLocked() []Endpoint {
	out := make([]Endpoint, 0, len(r.byIdentity))
	for _, e := range r.byIdentity {
		out = append(out, e.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// saveLocked writes the registry atomically, so a crash leaves either the
// old or the new file, never a torn one.
func (r *Registry) saveLocked() error {
	s := state{NextIdentity: r.nextIdentity, Endpoints: r.listLocked()}
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
