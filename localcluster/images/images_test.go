package images_test

import (
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
