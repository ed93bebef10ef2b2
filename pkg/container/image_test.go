package container

import (
	"testing"

	"outcall.dev/outcall/pkg/apikit"
)

// TestParseImage is S008-FR-037, AS-019, EC-021, SC-016.
func TestParseImage(t *testing.T) {
	const digest = "sha256:4b0bc9d8bbc3fdfc9e9c3c6c6b6b0b4b8c4d1e5b6d2b9e0f8a7c6d5e4f3a2b1c"
	tests := []struct {
		in   string
		want ImageRef
		err  string // substring; "" accepted
	}{
		{in: "alpine", want: ImageRef{Ref: "alpine:latest", Domain: "docker.io", Path: "library/alpine", Tag: "latest"}},
		{in: "my-agent:latest", want: ImageRef{Ref: "my-agent:latest", Domain: "docker.io", Path: "library/my-agent", Tag: "latest"}},
		{in: "python:3.12", want: ImageRef{Ref: "python:3.12", Domain: "docker.io", Path: "library/python", Tag: "3.12"}},
		{in: "registry.example:5000/team/agent:dev", want: ImageRef{Ref: "registry.example:5000/team/agent:dev", Domain: "registry.example:5000", Path: "team/agent", Tag: "dev"}},
		// A registry port is not a tag (EC-021).
		{in: "registry.example:5000/team/agent", want: ImageRef{Ref: "registry.example:5000/team/agent:latest", Domain: "registry.example:5000", Path: "team/agent", Tag: "latest"}},
		{in: "localhost:5000/agent", want: ImageRef{Ref: "localhost:5000/agent:latest", Domain: "localhost:5000", Path: "agent", Tag: "latest"}},
		// A digest is kept, and no tag is invented beside it.
		{in: "agent@" + digest, want: ImageRef{Ref: "agent@" + digest, Domain: "docker.io", Path: "library/agent", Digest: digest}},
		{in: "registry.example:5000/agent:dev@" + digest, want: ImageRef{Ref: "registry.example:5000/agent:dev@" + digest, Domain: "registry.example:5000", Path: "agent", Tag: "dev", Digest: digest}},
		{in: "docker.io/library/alpine:3", want: ImageRef{Ref: "alpine:3", Domain: "docker.io", Path: "library/alpine", Tag: "3"}},
		{in: "ghcr.io/outcall-dev/outcalld:v1", want: ImageRef{Ref: "ghcr.io/outcall-dev/outcalld:v1", Domain: "ghcr.io", Path: "outcall-dev/outcalld", Tag: "v1"}},

		{in: "", err: "an image reference is required"},
		{in: " alpine", err: "may not contain whitespace"},
		{in: "alpine latest", err: "may not contain whitespace"},
		{in: "alpine\t", err: "may not contain whitespace"},
		{in: "agent:", err: "empty tag"},
		{in: "registry.example:5000/agent:", err: "empty tag"},
		{in: "agent:@" + digest, err: "empty tag"},
		{in: "Agent", err: "must be lowercase"},
		{in: digest, err: "not an image id"},
		{in: "agent@sha256:short", err: "invalid image"},
		{in: "agent:tag:more", err: "invalid image"},
		{in: "-agent", err: "invalid image"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseImage("image", tt.in)
			if tt.err != "" {
				fieldError(t, err, "image", apikit.ErrInvalid, tt.err)
				return
			}
			must(t, err)
			if got != tt.want {
				t.Errorf("ParseImage(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
