package container

import (
	"fmt"

	"outcall.dev/outcall/pkg/apikit"
)

// FieldError is a create request refused before Docker was asked anything.
// Field names the request's JSON field ("memory_limit", "volumes[2]",
// "env[0]"); the message is the spec's where it gives one (the deny-list
// and helper-source errors) and names the field otherwise. Kind is
// apikit.ErrInvalid for a malformed request and apikit.ErrForbidden for one
// that would expose a protected host path, so apikit.StatusOf answers 400
// or 403.
//
// No message ever holds an environment value: values may be tokens.
type FieldError struct {
	Field string
	Kind  *apikit.Kind
	Msg   string
}

func (e *FieldError) Error() string { return e.Msg }

// Unwrap returns the kind, for errors.Is and apikit.StatusOf.
func (e *FieldError) Unwrap() error { return e.Kind }

func invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Kind: apikit.ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func forbidden(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Kind: apikit.ErrForbidden, Msg: fmt.Sprintf(format, args...)}
}
