// Package images is the local cluster's image store. An image reference
// such as kuberpc.local/example:v1 names an executable plus default
// arguments and environment, so a standard Deployment with an `image:`
// field runs unmodified as a local process. `kuberpc image build` and
// `kuberpc image load` register images; the node agent resolves them.
package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ErrNotFound is returned by Get for an image that is not in the store.
var ErrNotFound = errors.New("image not found in the local image store")

// Image is one registered image.
type Image struct {
	// Ref is the normalised reference: repository:tag.
	Ref string `json:"ref"`
	// Entrypoint is the executable (absolute path) and its fixed
	// arguments; a container's `command` replaces it.
	Entrypoint []string `json:"entrypoint"`
	// Args are default arguments; a container's `args` replace them.
	Args []string `json:"args,omitempty"`
	// Env is the image's environment, NAME=value; the container's env wins.
	Env []string `json:"env,omitempty"`
	// WorkingDir is where the process starts; default the executable's
	// directory.
	WorkingDir string `json:"workingDir,omitempty"`
	// Created is when the image was registered.
	Created time.Time `json:"created"`
}

// Store is a directory of images, one JSON file each. Its methods may be
// called from several processes: writes are atomic renames.
type Store struct{ Dir string }

var refRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

// Normalize checks ref and adds the :latest tag when it has none.
func Normalize(ref string) (string, error) {
	if !refRE.MatchString(ref) {
		return "", fmt.Errorf("invalid image reference %q: want lower-case repository[:tag], e.g. kuberpc.local/example:v1", ref)
	}
	last := ref[strings.LastIndexByte(ref, '/')+1:]
	if !strings.Contains(last, ":") {
		ref += ":latest"
	}
	return ref, nil
}

// FileName is ref (normalised) as one file name, for the store's entry
// and for what `kuberpc image build` writes: '/' and ':' escaped as in a
// URL path (%2F, %3A). No reference contains '%', so no two references
// share a name.
func FileName(ref string) string {
	return strings.NewReplacer("/", "%2F", ":", "%3A").Replace(ref)
}

func (s Store) file(ref string) string { return filepath.Join(s.Dir, FileName(ref)+".json") }

// legacyFile is where stores written before FileName kept ref: '/' as
// '_' and ':' as '@', which gave kuberpc.local/a/b and kuberpc.local/a_b
// one file, the last registered. Get still reads such an entry, when it
// holds ref itself; Put replaces it.
func (s Store) legacyFile(ref string) string {
	return filepath.Join(s.Dir, strings.NewReplacer("/", "_", ":", "@").Replace(ref)+".json")
}

// Put registers img, replacing an image of the same reference. The
// entrypoint must be an existing executable.
func (s Store) Put(img Image) error {
	ref, err := Normalize(img.Ref)
	if err != nil {
		return err
	}
	img.Ref = ref
	if len(img.Entrypoint) == 0 {
		return fmt.Errorf("image %s: no entrypoint", ref)
	}
	if !filepath.IsAbs(img.Entrypoint[0]) {
		return fmt.Errorf("image %s: entrypoint %q is not an absolute path", ref, img.Entrypoint[0])
	}
	st, err := os.Stat(img.Entrypoint[0])
	if err != nil {
		return fmt.Errorf("image %s: entrypoint: %w", ref, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("image %s: entrypoint %s is not an executable file", ref, img.Entrypoint[0])
	}
	if img.Created.IsZero() {
		img.Created = time.Now().UTC()
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".image-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), s.file(ref)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if old, err := s.read(s.legacyFile(ref)); err == nil && old.Ref == ref {
		os.Remove(s.legacyFile(ref))
	}
	return nil
}

// read reads the store entry in file.
func (s Store) read(file string) (Image, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Image{}, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("corrupt store entry %s: %w", file, err)
	}
	return img, nil
}

// Get returns the image ref names; the error wraps ErrNotFound when there
// is none.
func (s Store) Get(ref string) (Image, error) {
	n, err := Normalize(ref)
	if err != nil {
		return Image{}, err
	}
	img, err := s.read(s.file(n))
	if errors.Is(err, os.ErrNotExist) {
		// An entry from before FileName counts only if it is this image:
		// its name was shared with others.
		if img, err = s.read(s.legacyFile(n)); err == nil && img.Ref != n {
			err = os.ErrNotExist
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("%w: %s (register it with `kuberpc image build` or `kuberpc image load`)", ErrNotFound, n)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", n, err)
	}
	if img.Ref != n {
		return Image{}, fmt.Errorf("image %s: store entry %s holds image %s", n, s.file(n), img.Ref)
	}
	return img, nil
}

// Delete removes the image ref names from the store (what runs it is
// left where it is); the error wraps ErrNotFound when there is none.
func (s Store) Delete(ref string) error {
	img, err := s.Get(ref)
	if err != nil {
		return err
	}
	for _, f := range []string{s.file(img.Ref), s.legacyFile(img.Ref)} {
		if old, err := s.read(f); err == nil && old.Ref == img.Ref {
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("image %s: %w", img.Ref, err)
			}
		}
	}
	return nil
}

// List returns every image, sorted by reference.
func (s Store) List() ([]Image, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		img, err := s.read(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			return nil, err
		}
		// A legacy entry of a reference registered since is not listed
		// twice: the one Get returns is.
		if filepath.Join(s.Dir, e.Name()) != s.file(img.Ref) {
			if _, err := os.Stat(s.file(img.Ref)); err == nil {
				continue
			}
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}
