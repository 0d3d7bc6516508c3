package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

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
	binDir := filepath.Join(filepath.Dir(store.Dir), "image-bin")
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

func imageCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Register images for the local cluster (an image is an executable plus arguments)"}
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
		Use: "list", Short: "List registered images", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := imageStore()
			if err != nil {
				return err
			}
			imgs, err := store.List()
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
