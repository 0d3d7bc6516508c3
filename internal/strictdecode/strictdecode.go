// Package strictdecode decodes configuration documents (balancer configs
// in JSON, kuberpc.yaml and authorization policies in YAML) strictly:
// a field name must match exactly, as the Kubernetes API server matches
// them, and an unknown or repeated field is an error naming it.
// encoding/json alone matches names case-insensitively, so
// {"perEndpoint":2,"perendpoint":3} took 3 without a word.
package strictdecode

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// JSON decodes data into v. Field names are case-sensitive; an unknown
// field, a field given twice or anything after the value is an error.
func JSON(data []byte, v any) error {
	strict, err := sigsjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// YAML decodes data, YAML or JSON, into v with sigs.k8s.io/yaml's strict
// decoding (unknown fields and repeated keys are errors; a scalar is
// converted to the field's type, so cpu: 1 fills a string field with
// "1"), and then refuses keys that match a field only when case is
// ignored, naming the field they look like.
func YAML(data []byte, v any) error {
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		return err
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	var tree any
	if err := json.Unmarshal(j, &tree); err != nil {
		return err
	}
	return errors.Join(checkKeys(tree, reflect.TypeOf(v), "")...)
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkKeys walks tree, a decoded JSON document, beside t, the Go type
// it was decoded into, and returns an error for each object key that is
// not exactly the JSON name of a field. A type that decodes itself
// (json.Unmarshaler, encoding.TextUnmarshaler) is not looked into.
func checkKeys(tree any, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	var errs []error
	switch node := tree.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Struct:
			fields := jsonFields(t)
			for _, k := range slices.Sorted(maps.Keys(node)) {
				val := node[k]
				ft, ok := fields[k]
				if !ok {
					errs = append(errs, unknown(path+k, k, fields))
					continue
				}
				errs = append(errs, checkKeys(val, ft, path+k+".")...)
			}
		case reflect.Map:
			for _, k := range slices.Sorted(maps.Keys(node)) {
				errs = append(errs, checkKeys(node[k], t.Elem(), path+k+".")...)
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, val := range node {
				errs = append(errs, checkKeys(val, t.Elem(), fmt.Sprintf("%s[%d].", strings.TrimSuffix(path, "."), i))...)
			}
		}
	}
	return errs
}

// unknown reports key, which the decoder took for a field whose name
// differs from it only in case.
func unknown(path, key string, fields map[string]reflect.Type) error {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Errorf("unknown field %q: field names are case-sensitive, did you mean %q?", path, name)
		}
	}
	return fmt.Errorf("unknown field %q", path)
}

// jsonFields maps the JSON names of t's fields, those of embedded
// structs without a name of their own included, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for n, t := range jsonFields(et) {
					if _, ok := fields[n]; !ok {
						fields[n] = t
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = ft
	}
	return fields
}
