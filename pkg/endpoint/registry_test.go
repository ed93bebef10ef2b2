package endpoint

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name, iface, ip, mac string
		wantErr              string
	}{
		{"agent-1", "veth1", "10.200.0.10", "02:00:00:00:00:0a", ""},
		{"", "veth1", "10.200.0.10", "02:00:00:00:00:0a", "invalid endpoint name"},
		{"bad name", "veth1", "10.200.0.10", "02:00:00:00:00:0a", "invalid endpoint name"},
		{"a", "", "10.200.0.10", "02:00:00:00:00:0a", "invalid interface"},
		{"a", "veth-name-too-long", "10.200.0.10", "02:00:00:00:00:0a", "invalid interface"},
		{"a", "veth1", "2001:db8::1", "02:00:00:00:00:0a", `invalid ip "2001:db8::1"`},
		{"a", "veth1", "10.200.0", "02:00:00:00:00:0a", "invalid ip"},
		{"a", "veth1", "10.200.0.10", "zz", `invalid mac "zz"`},
		{"a", "veth1", "10.200.0.10", "01:00:5e:00:00:01", `invalid mac "01:00:5e:00:00:01": multicast`},
		{"a", "veth1", "10.200.0.10", "03:00:00:00:00:01", `invalid mac "03:00:00:00:00:01": multicast`},
		{"a", "veth1", "10.200.0.10", "33:33:00:00:00:01", `invalid mac "33:33:00:00:00:01": multicast`},
		{"a", "veth1", "10.200.0.10", "00:00:00:00:00:00", `invalid mac "00:00:00:00:00:00": all-zero address`},
		{"a", "veth1", "10.200.0.10", "ff:ff:ff:ff:ff:ff", `invalid mac "ff:ff:ff:ff:ff:ff": broadcast address`},
		{"a", "veth1", "10.200.0.10", "FF:FF:FF:FF:FF:FF", `invalid mac "FF:FF:FF:FF:FF:FF": broadcast address`},
		{"a", "veth1", "10.200.0.10", "02:00:00:00:00:0a:0b:0c", `invalid mac "02:00:00:00:00:0a:0b:0c": need a 6-byte`},
		// Locally administered and universal unicast addresses are fine.
		{"a", "veth1", "10.200.0.10", "00:16:3e:00:00:01", ""},
		{"a", "veth1", "10.200.0.10", "fe:ff:ff:ff:ff:ff", ""},
	}
	for _, tt := range tests {
		_, err := Validate(tt.name, tt.iface, tt.ip, tt.mac)
		if tt.wantErr == "" && err != nil {
			t.Errorf("Validate(%q) = %v", tt.name, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%q,%q,%q,%q) = %v, want %q", tt.name, tt.iface, tt.ip, tt.mac, err, tt.wantErr)
		}
	}
}

// TestRegistryRefusesDuplicateMAC (defect 7): a second endpoint with another
// one's MAC would receive that one's frames, so Add refuses it naming the
// field and the owner, in any spelling of the address.
func TestRegistryRefusesDuplicateMAC(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Validate("a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a")
	if _, err := r.Add(a); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mac, wantErr string
	}{
		{"same text", "02:00:00:00:00:0a", `invalid mac "02:00:00:00:00:0a": already belongs to endpoint "a"`},
		{"upper case", "02:00:00:00:00:0A", `invalid mac "02:00:00:00:00:0a": already belongs to endpoint "a"`},
		{"dashes", "02-00-00-00-00-0a", `invalid mac "02:00:00:00:00:0a": already belongs to endpoint "a"`},
		{"other mac", "02:00:00:00:00:0b", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Validate(fmt.Sprintf("b%d", i), fmt.Sprintf("veth-b%d", i), fmt.Sprintf("10.200.0.%d", 20+i), tt.mac)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Add(e)
			if tt.wantErr == "" && err != nil {
				t.Errorf("Add: %v", err)
			}
			if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Errorf("Add: %v, want %q", err, tt.wantErr)
			}
		})
	}
	if n := len(r.List()); n != 2 {
		t.Errorf("registry has %d endpoints, want 2 (a and the one with another MAC)", n)
	}
}

func TestRegistryPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "endpoints.json")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Validate("a", "veth-a", "10.200.0.10", "02:00:00:00:00:0a")
	b, _ := Validate("b", "veth-b", "10.200.0.11", "02:00:00:00:00:0b")
	ea, err := r.Add(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add(b); err != nil {
		t.Fatal(err)
	}
	for _, dup := range []Endpoint{
		{Name: "a", Interface: "x", IP: b.IP},
		{Name: "c", Interface: "veth-a", IP: b.IP},
		{Name: "c", Interface: "veth-c", IP: a.IP},
	} {
		if _, err := r.Add(dup); err == nil {
			t.Errorf("Add(%+v) accepted a duplicate", dup)
		}
	}
	if list := r.List(); len(list) != 2 {
		t.Fatalf("a refused Add changed the registry: %+v", list)
	}
	if _, err := r.Remove("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Remove("b"); err == nil {
		t.Fatal("removed b twice")
	}

	r2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := r2.List()
	if len(got) != 1 || got[0].Name != "a" || got[0].Identity != ea.Identity || got[0].MAC.String() != "02:00:00:00:00:0a" {
		t.Fatalf("reopened registry = %+v", got)
	}
	c, _ := Validate("c", "veth-c", "10.200.0.12", "02:00:00:00:00:0c")
	ec, err := r2.Add(c)
	if err != nil {
		t.Fatal(err)
	}
	if ec.Identity <= 2 {
		t.Fatalf("identity %d reused after restart, want > 2", ec.Identity)
	}
}
