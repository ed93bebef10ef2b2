package container

import (
	"strings"
	"unicode"

	"github.com/distribution/reference"
)

// ImageRef is a parsed image reference (S008-FR-037).
type ImageRef struct {
	// Ref is what Docker is given: the familiar form, with "latest" added
	// to a reference that has neither tag nor digest
	// ("registry.example:5000/team/agent:dev", "alpine:latest").
	Ref string
	// Domain is the registry ("docker.io", "registry.example:5000"); a
	// port stays here and never becomes a tag (S008-EC-021).
	Domain string
	// Path is the repository path in the registry ("library/alpine",
	// "team/agent").
	Path string
	// Tag is the tag, or "" for a digest-only reference.
	Tag string
	// Digest is the content digest ("sha256:..."), or "".
	Digest string
}

// ParseImage parses an image reference the way Docker does, and refuses
// before Docker is asked what Docker would refuse or misread: an empty
// reference, one with whitespace, an empty tag ("agent:"), an image id in
// place of a name. field names the request field in the error.
func ParseImage(field, s string) (ImageRef, error) {
	if s == "" {
		return ImageRef{}, invalid(field, "invalid %s: an image reference is required", field)
	}
	if strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		return ImageRef{}, invalid(field, "invalid %s %q: an image reference may not contain whitespace", field, s)
	}
	if strings.HasSuffix(s, ":") || strings.Contains(s, ":@") {
		return ImageRef{}, invalid(field, "invalid %s %q: empty tag", field, s)
	}
	if strings.HasPrefix(s, "sha256:") {
		return ImageRef{}, invalid(field, "invalid %s %q: give an image name, not an image id", field, s)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return ImageRef{}, invalid(field, "invalid %s %q: %v", field, s, err)
	}
	named = reference.TagNameOnly(named)
	out := ImageRef{
		Ref:    reference.FamiliarString(named),
		Domain: reference.Domain(named),
		Path:   reference.Path(named),
	}
	if t, ok := named.(reference.Tagged); ok {
		out.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		out.Digest = d.Digest().String()
	}
	return out, nil
}
