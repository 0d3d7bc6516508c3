package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuberpc/kuberpc/cmd/kuberpc/internal/scaffold"
	"github.com/kuberpc/kuberpc/examples/example"
	"github.com/kuberpc/kuberpc/localcluster/cluster"
	"github.com/kuberpc/kuberpc/localcluster/images"
)

func imageStore() (images.Store, error) {
	lc, err := cluster.Open(cluster.Options{})
	if err != nil {
		return images.Store{}, err
	}
	return images.Store{Dir: cluster.ImagesDir(lc.StateDir)}, nil
}

// registeredImages returns the local image store and its images.
func registeredImages() (images.Store, []images.Image, error) {
	store, err := imageStore()
	if err != nil {
		return store, nil, err
	}
	imgs, err := store.List()
	return store, imgs, err
}

// detectLang tells a service directory's language from what kuberpc new
// put in it.
func detectLang(dir string) string {
	for _, c := range []struct{ file, lang string }{
		{"go.mod", "go"}, {"cpp/Makefile", "cpp"}, {"java/build.sh", "java"}, {"python/server.py", "python"},
	} {
		if _, err := os.Stat(filepath.Join(dir, c.file)); err == nil {
			return c.lang
		}
	}
	return "go"
}

// buildNativeImage builds a Python, C++ or Java service in dir (as
// kuberpc new laid it out), copies what runs it next to the image store,
// so that later builds leave the image alone, and registers it as ref.
func buildNativeImage(cmd *cobra.Command, g *globals, ref, dir, lang string) (images.Image, error) {
	return registerBuilt(ref, func(norm, tmp string) error {
		fmt.Fprintf(g.out, "building %s (%s) from %s ...\n", norm, lang, dir)
		var err error
		var src string // the directory to snapshot
		switch lang {
		case "cpp":
			err, src = scaffold.GenCpp(cmd.Context(), dir), filepath.Join(dir, "cpp", "build")
		case "java":
			err, src = scaffold.GenJava(cmd.Context(), dir), filepath.Join(dir, "java", "build")
		case "python":
			err, src = example.RequireToolchain("python"), filepath.Join(dir, "python")
		}
		if err != nil {
			return err
		}
		if err := os.CopyFS(tmp, os.DirFS(src)); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		return nil
	}, func(snap string) []string {
		if lang == "python" {
			return []string{"/usr/bin/python3", filepath.Join(snap, "server.py")}
		}
		return []string{filepath.Join(snap, "server")}
	})
}

// buildImage compiles the Go main package pkg (relative to dir) as a
// static binary, with env added to the go command's, and registers it as
// ref in the local image store.
func buildImage(g *globals, ref, dir, pkg string, env ...string) (images.Image, error) {
	return registerBuilt(ref, func(norm, tmp string) error {
		fmt.Fprintf(g.out, "building %s from %s ...\n", norm, pkg)
		build := exec.Command("go", "build", "-trimpath", "-o", tmp, pkg)
		build.Dir = dir
		build.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
		build.Stdout, build.Stderr = g.errOut, g.errOut
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
		return nil
	}, func(bin string) []string { return []string{bin} })
}

// registerBuilt registers ref (normalized) in the local image store: make
// writes what runs the image (a binary or a directory) to tmp beside the
// store, which then replaces an earlier build of ref, and entry gives the
// image's entrypoint from where it landed. On error nothing is left.
func registerBuilt(ref string, make func(norm, tmp string) error, entry func(path string) []string) (images.Image, error) {
	norm, err := images.Normalize(ref)
	if err != nil {
		return images.Image{}, usageError{err}
	}
	store, err := imageStore()
	if err != nil {
		return images.Image{}, err
	}
	binDir := builtDir(store)
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return images.Image{}, err
	}
	path := filepath.Join(binDir, images.FileName(norm))
	tmp := path + ".tmp"
	os.RemoveAll(tmp)
	if err := make(norm, tmp); err != nil {
		os.RemoveAll(tmp)
		return images.Image{}, err
	}
	// A binary replaces the earlier one at once; a directory cannot be
	// renamed over another, which goes first.
	if err := os.Rename(tmp, path); err != nil {
		os.RemoveAll(path)
		if err := os.Rename(tmp, path); err != nil {
			os.RemoveAll(tmp)
			return images.Image{}, err
		}
	}
	img := images.Image{Ref: norm, Entrypoint: entry(path)}
	if err := store.Put(img); err != nil {
		return images.Image{}, err
	}
	return img, nil
}

// builtDir is where kuberpc image build puts what runs the images of
// store: an entry (a binary or a directory) per image.
func builtDir(store images.Store) string { return filepath.Join(filepath.Dir(store.Dir), "image-bin") }

// builtPaths are the entries of built (kuberpc image build's) that img's
// entrypoint runs from: none for an executable registered with kuberpc
// image load.
func builtPaths(built string, img images.Image) []string {
	var out []string
	for _, a := range img.Entrypoint {
		rel, err := filepath.Rel(built, a)
		if err != nil || !filepath.IsAbs(a) || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		top := filepath.Join(built, strings.SplitN(rel, string(filepath.Separator), 2)[0])
		if !slices.Contains(out, top) {
			out = append(out, top)
		}
	}
	return out
}

// notInUse returns an error naming the pods of the running local cluster
// (whatever the kubeconfig names: the store is the local cluster's)
// whose containers run one of imgs. Without a local cluster to ask (none
// was made, or its API server does not answer) there is no pod to
// protect, and it returns nil.
func notInUse(ctx context.Context, imgs []images.Image) error {
	lc, err := cluster.Open(cluster.Options{})
	if err != nil {
		return nil
	}
	cs, err := lc.Client()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var users []string
	for _, img := range imgs {
		var names []string
		for _, p := range pods.Items {
			for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
				if ref, err := images.Normalize(c.Image); err == nil && ref == img.Ref {
					names = append(names, p.Namespace+"/"+p.Name)
					break
				}
			}
		}
		if len(names) > 0 {
			users = append(users, fmt.Sprintf("%s (pods %s)", img.Ref, strings.Join(names, ", ")))
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("images in use, nothing removed: %s; delete what runs them first", strings.Join(users, ", "))
	}
	return nil
}

func imageCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Register, list and remove images for the local cluster (an image is an executable plus arguments)"}
	var dir, pkg, lang string
	build := &cobra.Command{
		Use: "build REF", Short: "Build a service's server (Go, Python, C++ or Java) and register it as image REF", Args: cobra.ExactArgs(1),
		Example: `  kuberpc image build kuberpc.local/greeter:v1 --pkg ./cmd/server
  kuberpc image build kuberpc.local/shop:v1 --dir shop    # a kuberpc new --lang cpp|java|python service`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if lang == "" {
				lang = detectLang(dir)
			}
			var img images.Image
			var err error
			switch lang {
			case "go":
				img, err = buildImage(g, args[0], dir, pkg)
			case "python", "cpp", "java":
				img, err = buildNativeImage(cmd, g, args[0], dir, lang)
			default:
				return usagef("--lang %q: want one of %s", lang, strings.Join(languages, ", "))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "registered %s -> %s\n", img.Ref, strings.Join(img.Entrypoint, " "))
			if lang == "go" {
				fmt.Fprintf(g.out, "for a real cluster: docker build -t %s %s\n", img.Ref, dir)
			}
			return nil
		},
	}
	build.Flags().StringVar(&dir, "dir", ".", "service directory to build in")
	build.Flags().StringVar(&pkg, "pkg", "./cmd/server", "main package to build (Go)")
	build.Flags().StringVar(&lang, "lang", "", "the server's language (default: from the directory: go.mod, cpp/Makefile, java/build.sh or python/server.py)")
	c.AddCommand(build)
	c.AddCommand(&cobra.Command{
		Use: "load REF EXECUTABLE [ARG...]", Short: "Register an existing executable (and default arguments) as image REF",
		Example: "  kuberpc image load kuberpc.local/example-python:v1 /usr/bin/python3 examples/example/python/server.py",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			if p, err := exec.LookPath(args[1]); err == nil && !strings.Contains(args[1], "/") {
				exe = p
			}
			var rest []string
			for _, a := range args[2:] {
				if _, err := os.Stat(a); err == nil && !filepath.IsAbs(a) {
					a, _ = filepath.Abs(a) // files named relative to here
				}
				rest = append(rest, a)
			}
			store, err := imageStore()
			if err != nil {
				return err
			}
			img := images.Image{Ref: args[0], Entrypoint: append([]string{exe}, rest...)}
			if err := store.Put(img); err != nil {
				return usageError{err}
			}
			fmt.Fprintf(g.out, "registered %s -> %s\n", args[0], strings.Join(img.Entrypoint, " "))
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "rm REF...",
		Short: "Remove images from the local image store, with what kuberpc image build made for them",
		Long: `Remove images from the local image store, with what kuberpc image build
made for them (an executable registered with kuberpc image load is left
where it is). An image a pod of the running local cluster uses is not
removed: delete the pod's Deployment first.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := imageStore()
			if err != nil {
				return err
			}
			var imgs []images.Image
			for _, ref := range args {
				img, err := store.Get(ref)
				if err != nil {
					return usageError{err}
				}
				imgs = append(imgs, img)
			}
			if err := notInUse(cmd.Context(), imgs); err != nil {
				return err
			}
			built := builtDir(store)
			for _, img := range imgs {
				if err := store.Delete(img.Ref); err != nil {
					return err
				}
				for _, path := range builtPaths(built, img) {
					if err := os.RemoveAll(path); err != nil {
						return err
					}
				}
				fmt.Fprintf(g.out, "removed %s\n", img.Ref)
			}
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "prune",
		Short: "Remove what kuberpc image build made that no registered image runs",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, imgs, err := registeredImages()
			if err != nil {
				return err
			}
			built := builtDir(store)
			used := map[string]bool{}
			for _, img := range imgs {
				for _, p := range builtPaths(built, img) {
					used[p] = true
				}
			}
			entries, err := os.ReadDir(built)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			for _, e := range entries {
				if p := filepath.Join(built, e.Name()); !used[p] {
					if err := os.RemoveAll(p); err != nil {
						return err
					}
					fmt.Fprintf(g.out, "removed %s\n", p)
				}
			}
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use: "list", Short: "List registered images", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, imgs, err := registeredImages()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.out, "%-40s %-20s %s\n", "IMAGE", "CREATED", "ENTRYPOINT")
			for _, i := range imgs {
				fmt.Fprintf(g.out, "%-40s %-20s %s\n", i.Ref, i.Created.Format("2006-01-02 15:04:05"), strings.Join(i.Entrypoint, " "))
			}
			return nil
		},
	})
	return c
}
