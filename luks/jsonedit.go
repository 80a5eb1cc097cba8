package luks

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// member is one member of a JSON object, its value kept as raw text.
type member struct {
	key string
	val json.RawMessage
}

// ordered is a JSON object that keeps its members in their order. json-c,
// which cryptsetup uses, writes members in insertion order; editing through
// ordered changes only the members asked for, so everything cryptshift
// does not interpret (unknown members, keyslot and token types) is written
// back exactly as it was read.
type ordered []member

// parseOrdered decodes one JSON object into its members.
func parseOrdered(raw []byte) (ordered, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("not a JSON object")
	}
	var o ordered
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		o = append(o, member{k, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o ordered) get(k string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.key == k {
			return m.val, true
		}
	}
	return nil, false
}

// set replaces k's value where it stands, or appends k as json-c does.
func (o *ordered) set(k string, v json.RawMessage) {
	for i := range *o {
		if (*o)[i].key == k {
			(*o)[i].val = v
			return
		}
	}
	*o = append(*o, member{k, v})
}

func (o *ordered) del(k string) {
	for i := range *o {
		if (*o)[i].key == k {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

// encode writes the object compactly; member values are compacted, not
// re-encoded, so their text (number spelling, escapes) is kept.
func (o ordered) encode() (json.RawMessage, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshalPlain(m.key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		if err := json.Compact(&b, m.val); err != nil {
			return nil, fmt.Errorf("member %q: %w", m.key, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshalPlain encodes v as compact JSON without Go's HTML escaping of <,
// > and &, which json-c does not do either.
func marshalPlain(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// editJSON sets (val != nil) or deletes (val == nil) the member at path in
// the object raw, every object on the way keeping its order, and returns
// the new compact text. Objects missing on the way are an error.
func editJSON(raw []byte, path []string, val json.RawMessage) (json.RawMessage, error) {
	o, err := parseOrdered(raw)
	if err != nil {
		return nil, err
	}
	if len(path) == 1 {
		if val == nil {
			o.del(path[0])
		} else {
			o.set(path[0], val)
		}
		return o.encode()
	}
	inner, ok := o.get(path[0])
	if !ok {
		return nil, fmt.Errorf("no member %q", path[0])
	}
	nv, err := editJSON(inner, path[1:], val)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path[0], err)
	}
	o.set(path[0], nv)
	return o.encode()
}
