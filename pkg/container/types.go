package container

// The S008 wire types and the constants every binary shares are in
// pkg/api (container.go): the CLI must not link the Docker client. This
// file holds only what the daemon's side adds to them.

import (
	"time"

	"outcall.dev/outcall/pkg/api"
)

// Constants of the daemon's side of the manager, beside pkg/api's.
const (
	// ResolvConfPath is the resolver file Docker writes from the daemon's
	// DNS settings; no caller mount may shadow it (S008-FR-033).
	ResolvConfPath = "/etc/resolv.conf"
	// TmpPath is the writable tmpfs of the read-only root (S008-FR-025).
	TmpPath = "/tmp"
	// TmpfsOptions are the mount options of the /tmp tmpfs. The size is
	// our choice; the spec names none.
	TmpfsOptions = "rw,nosuid,nodev,size=64m"
	// DefaultShimHostPath is --shim-host-path's default.
	DefaultShimHostPath = "/usr/local/bin/outcall-agent"

	// DefaultStopTimeout is the wait between SIGTERM and SIGKILL
	// (S008-FR-012, FR-028): api.DefaultStopTimeoutSecs as a duration.
	DefaultStopTimeout = time.Duration(api.DefaultStopTimeoutSecs) * time.Second
	// MaxCPUShares bounds a requested CPU weight (the kernel's cpu.shares
	// range; api.MinCPUShares is the floor).
	MaxCPUShares int64 = 262144
	// MaxNameLen bounds a container name. It is the endpoint registry's
	// bound, so every container Outcall creates can be registered as an
	// identity under its own name.
	MaxNameLen = 64

	// NoProxy is the NO_PROXY (and no_proxy) value of every managed
	// container (S008-FR-002.e).
	NoProxy = "localhost,127.0.0.1"
)

// Labels Outcall adds to pkg/api's (managed-by, outcall.network,
// outcall.created-at) on every container it creates.
const (
	// LabelAgentName is the agent.name rules see (S013-FR-004). The spec
	// names no label for it; this is ours, for operators filtering
	// `docker ps`. The identity registry, not this label, is what
	// enforcement trusts.
	LabelAgentName = "outcall.agent-name"
	// LabelIdentity is the numeric identity the network controller gave
	// the container before it was created. Informational, like
	// LabelAgentName: anyone with the Docker socket can forge a label.
	LabelIdentity = "outcall.identity"
)

// Docker network options Outcall sets on the Docker network of each of its
// networks (S002-FR-002, DESIGN §5).
const (
	// OptionBridgeName names the Linux bridge a Docker bridge network
	// uses: the Outcall network's own, made by outcalld beforehand.
	OptionBridgeName = "com.docker.network.bridge.name"
	// OptionEnableICC off: containers on one network do not reach each
	// other through the bridge (the datapath refuses it too).
	OptionEnableICC = "com.docker.network.bridge.enable_icc"
	// DriverBridge is the only Docker network driver Outcall uses.
	DriverBridge = "bridge"
)
