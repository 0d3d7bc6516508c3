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

func (s Store) file(ref string) string {
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
	return os.Rename(tmp.Name(), s.file(ref))
}

// Get returns the image ref names; the error wraps ErrNotFound when there
// is none.
func (s Store) Get(ref string) (Image, error) {
	n, err := Normalize(ref)
	if err != nil {
		return Image{}, err
	}
	b, err := os.ReadFile(s.file(n))
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("%w: %s (register it with `kuberpc image build` or `kuberpc image load`)", ErrNotFound, n)
	}
	if err != nil {
		return Image{}, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("image %s: corrupt store entry %s: %w", n, s.file(n), err)
	}
	return img, nil
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
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var img Image
		if err := json.Unmarshal(b, &img); err != nil {
			return nil, fmt.Errorf("corrupt store entry %s: %w", e.Name(), err)
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}
