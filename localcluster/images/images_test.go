package images_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kuberpc/kuberpc/localcluster/images"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "kuberpc.local/example:v1", want: "kuberpc.local/example:v1"},
		{in: "kuberpc.local/example", want: "kuberpc.local/example:latest"},
		{in: "localhost:5000/team/app:1.2", want: "localhost:5000/team/app:1.2"},
		{in: "Upper/case", err: "invalid image reference"},
		{in: "", err: "invalid image reference"},
		{in: "a b", err: "invalid image reference"},
	} {
		got, err := images.Normalize(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Normalize(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestPutRejectsBadEntrypoints(t *testing.T) {
	s := images.Store{Dir: t.TempDir()}
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		img  images.Image
		want string
	}{
		{images.Image{Ref: "x/y:v1"}, "no entrypoint"},
		{images.Image{Ref: "x/y:v1", Entrypoint: []string{"relative/bin"}}, "not an absolute path"},
		{images.Image{Ref: "x/y:v1", Entrypoint: []string{"/no/such/bin"}}, "no such file"},
		{images.Image{Ref: "x/y:v1", Entrypoint: []string{plain}}, "not an executable"},
	} {
		if err := s.Put(tc.img); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Put(%+v) = %v, want an error containing %q", tc.img, err, tc.want)
		}
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("rejected images were stored: %v", imgs)
	}
}

// TestReferencesNeverShareAnEntry: references that differ only where the
// store's file names once merged them ('/' against '_', a port against a
// path) are separate images, each with its own entrypoint.
func TestReferencesNeverShareAnEntry(t *testing.T) {
	s := images.Store{Dir: t.TempDir()}
	refs := []string{"kuberpc.local/a/b:v1", "kuberpc.local/a_b:v1", "kuberpc.local_a/b:v1", "host:5000/x:v1", "host/5000_x:v1"}
	for i, ref := range refs {
		if err := s.Put(images.Image{Ref: ref, Entrypoint: []string{"/bin/true"}, Args: []string{ref}, Env: []string{"N=" + string(rune('0'+i))}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ref := range refs {
		img, err := s.Get(ref)
		if err != nil || img.Ref != ref || len(img.Args) != 1 || img.Args[0] != ref {
			t.Errorf("Get(%s) = %+v, %v; want the image registered as %s", ref, img, err, ref)
		}
	}
	if list, err := s.List(); err != nil || len(list) != len(refs) {
		t.Errorf("List = %d images, %v; want %d", len(list), err, len(refs))
	}
	if images.FileName("kuberpc.local/a/b:v1") == images.FileName("kuberpc.local/a_b:v1") {
		t.Error("two references have one file name")
	}
}

// TestLegacyEntries: an entry written under the old file name is still
// found, as long as it holds the image asked for; registering the
// reference again replaces it.
func TestLegacyEntries(t *testing.T) {
	dir := t.TempDir()
	s := images.Store{Dir: dir}
	legacy := filepath.Join(dir, "kuberpc.local_a_b@v1.json")
	if err := os.WriteFile(legacy, []byte(`{"ref":"kuberpc.local/a/b:v1","entrypoint":["/bin/true"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Get("kuberpc.local/a/b:v1"); err != nil || img.Ref != "kuberpc.local/a/b:v1" {
		t.Errorf("the legacy entry: %+v, %v", img, err)
	}
	if _, err := s.Get("kuberpc.local/a_b:v1"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("another reference of the same legacy name: %v; want not found", err)
	}
	if err := s.Put(images.Image{Ref: "kuberpc.local/a/b:v1", Entrypoint: []string{"/bin/false"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Errorf("the legacy entry outlived the image registered again: %v", err)
	}
	if img, err := s.Get("kuberpc.local/a/b:v1"); err != nil || img.Entrypoint[0] != "/bin/false" {
		t.Errorf("after registering again: %+v, %v", img, err)
	}
}

// TestDelete: Delete removes an image's entry, a legacy one of the same
// image too, and leaves another image that once shared the legacy name;
// an image that is not there is ErrNotFound.
func TestDelete(t *testing.T) {
	dir := t.TempDir()
	s := images.Store{Dir: dir}
	for _, ref := range []string{"kuberpc.local/a/b:v1", "kuberpc.local/a/c:v1"} {
		if err := s.Put(images.Image{Ref: ref, Entrypoint: []string{"/bin/true"}}); err != nil {
			t.Fatal(err)
		}
	}
	legacy := filepath.Join(dir, "kuberpc.local_a_d@v1.json")
	os.WriteFile(legacy, []byte(`{"ref":"kuberpc.local/a/d:v1","entrypoint":["/bin/true"]}`), 0o644)
	for _, ref := range []string{"kuberpc.local/a/b:v1", "kuberpc.local/a/d:v1"} {
		if err := s.Delete(ref); err != nil {
			t.Errorf("Delete(%s): %v", ref, err)
		}
		if _, err := s.Get(ref); !errors.Is(err, images.ErrNotFound) {
			t.Errorf("%s after Delete: %v; want not found", ref, err)
		}
	}
	if _, err := s.Get("kuberpc.local/a/c:v1"); err != nil {
		t.Errorf("another image after Delete: %v", err)
	}
	if err := s.Delete("kuberpc.local/a/b:v1"); !errors.Is(err, images.ErrNotFound) {
		t.Errorf("Delete of an image that is not there: %v; want ErrNotFound", err)
	}
	if err := s.Delete("Bad Ref"); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Errorf("Delete of a bad reference: %v", err)
	}
}
