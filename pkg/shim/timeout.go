package shim

import (
	"fmt"
	"strconv"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// ParseTimeout reads OUTCALL_TIMEOUT_SECS: set says whether the variable is
// set at all (os.LookupEnv), so that an empty value is an error rather than
// the default. The value must be a decimal integer from 1 to
// api.MaxShimTimeoutSecs with nothing around it: no sign, space or unit.
// Unset means api.DefaultShimTimeoutSecs. A bad value never falls back to
// the default (S005-FR-014); the caller exits 5 (S005-EC-004).
func ParseTimeout(value string, set bool) (time.Duration, error) {
	if !set {
		return api.DefaultShimTimeoutSecs * time.Second, nil
	}
	bad := fmt.Errorf("invalid %s %q: must be an integer from 1 to %d (seconds)", api.ShimTimeoutEnv, value, api.MaxShimTimeoutSecs)
	// Digits only, stated here rather than borrowed from strconv's grammar
	// (Rust's u64 parse took a leading "+"; this one does not).
	for i := 0; i < len(value); i++ {
		if value[i] < '0' || value[i] > '9' {
			return 0, bad
		}
	}
	n, err := strconv.ParseUint(value, 10, 64)
	if err != nil || n < 1 || n > api.MaxShimTimeoutSecs {
		return 0, bad
	}
	return time.Duration(n) * time.Second, nil
}
