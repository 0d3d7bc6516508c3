package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/kuberpc/kuberpc/localcluster/images"
)

func writeImage(s images.Store, ref, exe string) error {
	return s.Put(images.Image{Ref: ref, Entrypoint: []string{exe}})
}

// rewriteEntrypoint edits a stored image behind the store's back, as if
// its executable had been deleted after registration.
func rewriteEntrypoint(s images.Store, ref, exe string) error {
	file := filepath.Join(s.Dir, images.FileName(ref)+".json")
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var img images.Image
	if err := json.Unmarshal(b, &img); err != nil {
		return err
	}
	img.Entrypoint = []string{exe}
	b, _ = json.Marshal(img)
	return os.WriteFile(file, b, 0o644)
}
