package container

import (
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"outcall.dev/outcall/pkg/api"
)

// RedactEnv returns env with every value replaced by api.RedactedValue: "NAME=value"
// becomes "NAME=<redacted>" (S008-FR-015). Names are kept for diagnosis;
// values may be provider or broker tokens and never leave the daemon. An
// entry without "=" is taken as a bare name.
func RedactEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		name, _, _ := strings.Cut(e, "=")
		out = append(out, name+"="+api.RedactedValue)
	}
	return out
}

// Inspect turns Docker's inspect answer for a managed container into the
// host API's api.ContainerInspectResult: env names with redacted values, mounts as
// "source:destination[:ro]", the address on the container's own Outcall
// network only (the outcall.network label's; an address on any other
// network is not the container's identity). Nothing else of Docker's
// answer (labels, command, host config) is passed on.
func Inspect(in container.InspectResponse) api.ContainerInspectResult {
	out := api.ContainerInspectResult{
		ContainerID: in.ID,
		Name:        strings.TrimPrefix(in.Name, "/"),
		Mounts:      []string{},
		Env:         []string{},
		CreatedAt:   rfc3339(in.Created),
	}
	if in.State != nil {
		out.State = string(in.State.Status)
	}
	if in.Config != nil {
		out.Image = in.Config.Image
		out.Network = in.Config.Labels[api.LabelNetwork]
		out.Env = RedactEnv(in.Config.Env)
	}
	if in.NetworkSettings != nil && out.Network != "" {
		if ep := in.NetworkSettings.Networks[out.Network]; ep != nil && ep.IPAddress != "" {
			ip := ep.IPAddress
			out.IPAddress = &ip
		}
	}
	for _, m := range in.Mounts {
		src := m.Source
		if m.Type == mount.TypeVolume && m.Name != "" {
			src = m.Name
		}
		s := src + ":" + m.Destination
		if !m.RW {
			s += ":ro"
		}
		out.Mounts = append(out.Mounts, s)
	}
	return out
}

// Summarize turns one entry of Docker's container list into the host API's
// Info.
func Summarize(in container.Summary) api.ContainerInfo {
	out := api.ContainerInfo{
		ContainerID: in.ID,
		Image:       in.Image,
		State:       string(in.State),
		Network:     in.Labels[api.LabelNetwork],
		CreatedAt:   time.Unix(in.Created, 0).UTC().Format(time.RFC3339),
	}
	if len(in.Names) > 0 {
		out.Name = strings.TrimPrefix(in.Names[0], "/")
	}
	return out
}

// rfc3339 normalises Docker's creation time (RFC 3339 with nanoseconds)
// to RFC 3339 seconds in UTC, as the spec's examples show it; a time that
// does not parse is passed on as it is.
func rfc3339(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format(time.RFC3339)
}
