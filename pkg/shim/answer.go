package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"outcall.dev/outcall/pkg/api"
)

// The agent API's answers are decoded by hand, key by key, rather than with
// json.Unmarshal into the wire types: encoding/json matches keys without
// regard to case and lets a repeated key overwrite the first, so
// {"allowed":false,"ALLOWED":true} would be an allow. Here a key is one of
// the expected ones, exactly, at most once; a required value is never null;
// nothing follows the one object. An answer that is anything else is a
// daemon that cannot be trusted (S005-FR-011), and the shim exits 5.

// errMalformed marks an answer that is not the agent API's JSON.
var errMalformed = errors.New("malformed answer")

// ParseVerdict decodes the body of a 2xx answer to POST
// /v1/permissions/check: the envelope with success true, no error and a
// Verdict in data that has an "allowed" boolean and nothing unknown.
func ParseVerdict(body []byte) (api.Verdict, error) {
	data, err := envelopeData(body)
	if err != nil {
		return api.Verdict{}, err
	}
	var v api.Verdict
	var allowed *bool
	err = decodeObject(data, map[string]func(json.RawMessage) error{
		"allowed":      func(r json.RawMessage) error { return required(r, &allowed) },
		"matched_rule": func(r json.RawMessage) error { return json.Unmarshal(r, &v.MatchedRule) },
		"reason":       func(r json.RawMessage) error { return json.Unmarshal(r, &v.Reason) },
	})
	if err != nil {
		return api.Verdict{}, fmt.Errorf("verdict: %w", err)
	}
	if allowed == nil {
		return api.Verdict{}, fmt.Errorf("verdict: %w: no \"allowed\"", errMalformed)
	}
	v.Allowed = *allowed
	return v, nil
}

// ParseCheckin decodes the body of a 2xx answer to POST /v1/checkin: the
// envelope with success true and a CheckinData whose container id and
// session token are not empty (the token also only of visible ASCII, since
// it goes into a header) and whose context keys are present.
func ParseCheckin(body []byte) (api.CheckinData, error) {
	data, err := envelopeData(body)
	if err != nil {
		return api.CheckinData{}, err
	}
	var c api.CheckinData
	var id, token *string
	var keys []*string
	haveKeys := false
	err = decodeObject(data, map[string]func(json.RawMessage) error{
		"container_id":  func(r json.RawMessage) error { return required(r, &id) },
		"session_token": func(r json.RawMessage) error { return required(r, &token) },
		"context_keys": func(r json.RawMessage) error {
			haveKeys = true
			return required(r, &keys)
		},
	})
	if err != nil {
		return api.CheckinData{}, fmt.Errorf("check-in data: %w", err)
	}
	switch {
	case id == nil || *id == "":
		return api.CheckinData{}, fmt.Errorf("check-in data: %w: no container_id", errMalformed)
	case token == nil || !headerSafe(*token):
		return api.CheckinData{}, fmt.Errorf("check-in data: %w: no usable session_token", errMalformed)
	case !haveKeys:
		return api.CheckinData{}, fmt.Errorf("check-in data: %w: no context_keys", errMalformed)
	}
	c.ContainerID, c.SessionToken = *id, *token
	c.ContextKeys = make([]string, 0, len(keys))
	for _, k := range keys {
		if k == nil {
			return api.CheckinData{}, fmt.Errorf("check-in data: %w: null context key", errMalformed)
		}
		c.ContextKeys = append(c.ContextKeys, *k)
	}
	return c, nil
}

// headerSafe reports whether s is a non-empty run of visible ASCII, so that
// "Bearer <s>" is one well-formed header value.
func headerSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// envelopeData checks the envelope of a successful answer and returns its
// data. success false (with its error), success true with an error, and
// success true without data are all refused.
func envelopeData(body []byte) (json.RawMessage, error) {
	var success *bool
	var data json.RawMessage
	var message *string
	haveError := false
	err := decodeObject(body, map[string]func(json.RawMessage) error{
		"success": func(r json.RawMessage) error { return required(r, &success) },
		"data":    func(r json.RawMessage) error { data = r; return nil },
		"error": func(r json.RawMessage) error {
			haveError = true
			return json.Unmarshal(r, &message)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	switch {
	case success == nil:
		return nil, fmt.Errorf("envelope: %w: no \"success\"", errMalformed)
	case !*success:
		msg := ""
		if message != nil {
			msg = *message
		}
		return nil, fmt.Errorf("outcalld answered success:false: %s", printable(msg))
	case haveError:
		return nil, fmt.Errorf("envelope: %w: success with an error", errMalformed)
	case data == nil || bytes.Equal(data, []byte("null")):
		return nil, fmt.Errorf("envelope: %w: success without data", errMalformed)
	}
	return data, nil
}

// decodeObject reads one JSON object from data and hands each value to the
// function of its key. A key without a function, a repeated key, anything
// but an object, and anything after it are errors.
func decodeObject(data []byte, fields map[string]func(json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not an object", errMalformed)
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: key is not a string", errMalformed)
		}
		set, known := fields[key]
		switch {
		case !known:
			return fmt.Errorf("%w: unknown field %q", errMalformed, printable(key))
		case seen[key]:
			return fmt.Errorf("%w: field %q repeated", errMalformed, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: field %q: %w", errMalformed, key, err)
		}
		if err := set(raw); err != nil {
			return fmt.Errorf("%w: field %q: %w", errMalformed, key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the object", errMalformed)
	}
	return nil
}

// required decodes a value that must not be null into *dst (a pointer or
// slice, so that null would otherwise pass as the zero value).
func required[T any](raw json.RawMessage, dst *T) error {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return errors.New("null")
	}
	return json.Unmarshal(raw, dst)
}
