package store

import (
	"bytes"
	"fmt"
	"strings"
)

// ShadowKey names a shadow replica: thing and shadow name ("" is classic).
type ShadowKey struct{ Thing, Name string }

func (k ShadowKey) bytes() []byte { return []byte(k.Thing + "/" + k.Name) }

// PutShadow stores a shadow document. An unchanged document is not written
// (SD-card wear); the result says whether it was.
func (t *Tx) PutShadow(k ShadowKey, doc []byte) (written bool, err error) {
	b := t.bucket(bucketShadows)
	if old := b.Get(k.bytes()); old != nil && bytes.Equal(old, doc) {
		return false, nil
	}
	if err := b.Put(k.bytes(), doc); err != nil {
		return false, fmt.Errorf("put shadow %s/%s: %w", k.Thing, k.Name, err)
	}
	return true, nil
}

// GetShadow returns a stored shadow document or ErrNotFound.
func (t *Tx) GetShadow(k ShadowKey) ([]byte, error) {
	v := t.bucket(bucketShadows).Get(k.bytes())
	if v == nil {
		return nil, fmt.Errorf("shadow %s/%s: %w", k.Thing, k.Name, ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// Shadows calls fn for every stored shadow.
func (t *Tx) Shadows(fn func(k ShadowKey, doc []byte) error) error {
	return t.bucket(bucketShadows).ForEach(func(k, v []byte) error {
		thing, name, _ := strings.Cut(string(k), "/")
		return fn(ShadowKey{thing, name}, bytes.Clone(v))
	})
}

// PutShadow stores a shadow document in a transaction of its own.
func (s *Store) PutShadow(k ShadowKey, doc []byte) (written bool, err error) {
	err = s.Update(func(tx *Tx) error {
		written, err = tx.PutShadow(k, doc)
		return err
	})
	return written, err
}

// GetShadow returns a stored shadow document or ErrNotFound.
func (s *Store) GetShadow(k ShadowKey) (doc []byte, err error) {
	err = s.View(func(tx *Tx) error {
		doc, err = tx.GetShadow(k)
		return err
	})
	return doc, err
}

// NamedShadows calls fn, in name order, for each stored named shadow of
// thing whose name sorts after after ("" for the first); the classic
// shadow is not among them. fn returns false to stop. Documents are the
// stored bytes (a deleted shadow's too: the caller knows the format).
func (t *Tx) NamedShadows(thing, after string, fn func(name string, doc []byte) (more bool, err error)) error {
	prefix := []byte(thing + "/")
	c := t.bucket(bucketShadows).Cursor()
	k, v := c.Seek(append(bytes.Clone(prefix), after...))
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		name := string(k[len(prefix):])
		if name == "" || name <= after {
			continue
		}
		more, err := fn(name, bytes.Clone(v))
		if err != nil || !more {
			return err
		}
	}
	return nil
}
