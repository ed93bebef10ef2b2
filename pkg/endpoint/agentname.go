package endpoint

import "strings"

// AgentName is the agent.name rules see for a container called name (S013-FR-004):
// the container's name with one trailing replica suffix "-N" (N one or
// more ASCII digits) removed, so "foobar-1" and "foobar-2" are both
// "foobar" and "my-agent-12" is "my-agent". A name without such a suffix
// is used whole ("standalone", "project-final", "project-"). Only the last
// suffix goes ("a-1-2" is "a-1"), and "-0" and "-007" count. A leading "/"
// (Docker's inspect spelling) is dropped first. A name that would become
// empty ("-1") is kept whole: an agent name is never empty.
func AgentName(name string) string {
	name = strings.TrimPrefix(name, "/")
	i := strings.LastIndexByte(name, '-')
	if i <= 0 || i == len(name)-1 {
		return name
	}
	for _, c := range []byte(name[i+1:]) {
		if c < '0' || c > '9' {
			return name
		}
	}
	return name[:i]
}

// AgentName is the agent.name rules see for the endpoint, at every layer:
// a container's is derived from its name (AgentName), an operator's
// endpoint's is its name as the operator gave it.
func (e Endpoint) AgentName() string {
	if e.Origin == OriginDocker {
		return AgentName(e.Name)
	}
	return e.Name
}
