package nft

import (
	"github.com/google/nftables"

	"outcall.dev/outcall/pkg/api"
)

// Intact reports whether every table of the floor exists, asked afresh from
// the kernel. A false answer (or an error asking) means the floor should be
// applied again: someone deleted a table, and a port whose program is also
// gone would be open.
func (f *Floor) Intact() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return false
	}
	tables, err := c.ListTables()
	if err != nil {
		return false
	}
	present := map[nftables.TableFamily]bool{}
	for _, t := range tables {
		if t.Name == api.NFTableName {
			present[t.Family] = true
		}
	}
	for _, t := range []*nftables.Table{inetTable(), bridgeTable(), arpTable()} {
		if !present[t.Family] {
			return false
		}
	}
	return true
}
