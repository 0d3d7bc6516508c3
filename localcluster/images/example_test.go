package images_test

import (
	"fmt"
	"os"

	"github.com/kuberpc/kuberpc/localcluster/images"
)

// An image is an executable registered under a reference; a Deployment's
// image: field then runs it on the local cluster.
func Example() {
	dir, _ := os.MkdirTemp("", "images")
	defer os.RemoveAll(dir)
	store := images.Store{Dir: dir}
	if err := store.Put(images.Image{Ref: "kuberpc.local/true", Entrypoint: []string{"/bin/true"}}); err != nil {
		fmt.Println(err)
		return
	}
	img, err := store.Get("kuberpc.local/true:latest")
	fmt.Println(img.Ref, img.Entrypoint, err)
	_, err = store.Get("kuberpc.local/missing:v1")
	fmt.Println(err)
	// Output:
	// kuberpc.local/true:latest [/bin/true] <nil>
	// image not found in the local image store: kuberpc.local/missing:v1 (register it with `kuberpc image build` or `kuberpc image load`)
}
