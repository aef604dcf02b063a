// Command mkimage builds hairpinctl's container image without a container
// daemon, as an OCI archive (a tar of an OCI image layout) that
// `ctr images import`, `podman load` and `skopeo copy oci-archive:` read,
// and pushes such archives to a registry. It is a module of its own so
// that hairpinctl's go.mod and binary never carry go-containerregistry.
//
//	mkimage build --binary bin/hairpinctl --arch amd64 --version v1.2.0 \
//	    --ref ghcr.io/hairpinctl/hairpinctl:v1.2.0 --out dist/image-amd64.tar
//	mkimage push --image ghcr.io/hairpinctl/hairpinctl:v1.2.0 dist/image-*.tar
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinaryPath is where the image holds hairpinctl, as the systemd units
// and the DaemonSet name it.
const BinaryPath = "usr/local/bin/hairpinctl"

// Annotation keys containerd reads an image's name from on import.
const containerdImageName = "io.containerd.image.name"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = buildCmd(os.Args[2:])
	case "push":
		err = pushCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mkimage build --binary PATH --arch ARCH --version V --ref NAME:TAG --out FILE.tar\n       mkimage push --image NAME:TAG [--insecure] FILE.tar...")
	os.Exit(2)
}

// Options describe one image.
type Options struct {
	// Binary is the static hairpinctl to put at /usr/local/bin/hairpinctl.
	Binary string
	// Arch is its GOARCH; OS is always linux.
	Arch string
	// Version and Revision label the image (OCI annotations and labels).
	Version, Revision string
	// Ref names the image in the archive (what ctr and podman call it).
	Ref string
	// Created stamps the image and every file in it: the same input gives
	// the same digest.
	Created time.Time
	// Source is the project's URL.
	Source string
}

func buildCmd(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	var o Options
	fs.StringVar(&o.Binary, "binary", "", "the static hairpinctl binary")
	fs.StringVar(&o.Arch, "arch", "", "its GOARCH (amd64, arm64, ...)")
	fs.StringVar(&o.Version, "version", "dev", "version, for the annotations")
	fs.StringVar(&o.Revision, "revision", "", "source revision (git commit), for the annotations")
	fs.StringVar(&o.Ref, "ref", "", "image name:tag recorded in the archive")
	fs.StringVar(&o.Source, "source", "https://github.com/hairpinctl/hairpinctl", "source URL, for the annotations")
	created := fs.String("created", "", "creation time, RFC 3339 or Unix seconds [SOURCE_DATE_EPOCH, else now]")
	out := fs.String("out", "", "the OCI archive to write")
	_ = fs.Parse(args)
	if o.Binary == "" || o.Arch == "" || o.Ref == "" || *out == "" || fs.NArg() > 0 {
		usage()
	}
	t, err := parseCreated(*created)
	if err != nil {
		return err
	}
	o.Created = t
	img, err := Image(o)
	if err != nil {
		return err
	}
	if err := WriteArchive(*out, img, o); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s linux/%s %s\n", *out, o.Ref, o.Arch, d)
	return nil
}

func parseCreated(s string) (time.Time, error) {
	if s == "" {
		s = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--created %q: want RFC 3339 or Unix seconds", s)
	}
	return t.UTC(), nil
}

// Image builds the image: one layer holding the binary, nothing else. The
// commands it runs read the kernel over netlink (nf_tables, conntrack,
// links), so no iptables, nft, shell or libc is needed.
func Image(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s is not an ELF binary", o.Binary)
	}
	layerTar, err := layerTar(bin, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "mkimage: COPY hairpinctl /" + BinaryPath,
			Comment:   "the static hairpinctl " + o.Version,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", o.Arch, variant(o.Arch)
	cf.Created = v1.Time{Time: o.Created}
	cf.Config.Entrypoint = []string{"/" + BinaryPath}
	cf.Config.Cmd = []string{"watch", "--bridge", "cni0"}
	cf.Config.Env = []string{"PATH=/usr/local/bin"}
	cf.Config.Labels = Annotations(o)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, Annotations(o)).(v1.Image), nil
}

// Annotations are the OCI pre-defined annotations the image carries, on
// its manifest and, as labels, in its configuration (what `podman
// inspect` and `crictl inspecti` show).
func Annotations(o Options) map[string]string {
	a := map[string]string{
		"org.opencontainers.image.title":       "hairpinctl",
		"org.opencontainers.image.description": "inspect and fix Kubernetes hairpin networking on a node",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.url":         o.Source,
	}
	if o.Revision != "" {
		a["org.opencontainers.image.revision"] = o.Revision
	}
	return a
}

// variant is the platform variant registries and runtimes expect.
func variant(arch string) string {
	switch arch {
	case "arm64":
		return "v8"
	case "arm":
		return "v7"
	}
	return ""
}

// layerTar is the layer: the directories down to the binary, owned by
// root, stamped with t.
func layerTar(bin []byte, t time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []string{"usr/", "usr/local/", "usr/local/bin/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: t, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: BinaryPath, Mode: 0o755, Size: int64(len(bin)), ModTime: t, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img as an OCI archive: the OCI image layout (an
// index.json naming the image, oci-layout, blobs/) in one tar.
func WriteArchive(out string, img v1.Image, o Options) error {
	dir, err := os.MkdirTemp("", "mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	anns := map[string]string{
		// podman and skopeo read the name from ref.name, containerd from
		// its own key; both take a full reference.
		"org.opencontainers.image.ref.name": o.Ref,
		containerdImageName:                 o.Ref,
	}
	if err := p.AppendImage(img, layout.WithAnnotations(anns), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: o.Arch, Variant: variant(o.Arch)})); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarDir(f, dir, o.Created); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// tarDir writes dir's files in a fixed order with fixed metadata.
func tarDir(w io.Writer, dir string, t time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, path := range paths {
		rel, _ := filepath.Rel(dir, path)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: t, Mode: 0o644, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// ReadArchive opens an OCI archive written by WriteArchive: its images
// (one per archive from build) with their platforms. The returned cleanup
// removes the unpacked layout.
func ReadArchive(path string) ([]v1.Image, []v1.Platform, func(), error) {
	dir, err := os.MkdirTemp("", "mkimage-")
	if err != nil {
		return nil, nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) ([]v1.Image, []v1.Platform, func(), error) {
		cleanup()
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := untar(path, dir); err != nil {
		return fail(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return fail(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		return fail(err)
	}
	m, err := ii.IndexManifest()
	if err != nil {
		return fail(err)
	}
	var imgs []v1.Image
	var plats []v1.Platform
	for _, d := range m.Manifests {
		img, err := ii.Image(d.Digest)
		if err != nil {
			return fail(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return fail(err)
		}
		imgs = append(imgs, img)
		plats = append(plats, v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant})
	}
	if len(imgs) == 0 {
		return fail(errors.New("no image in the archive"))
	}
	return imgs, plats, cleanup, nil
}

func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("unsafe path %q in the archive", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return err
			}
		}
	}
}

func pushCmd(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	image := fs.String("image", "", "where to push: registry/repository:tag")
	insecure := fs.Bool("insecure", false, "the registry speaks plain HTTP")
	_ = fs.Parse(args)
	if *image == "" || fs.NArg() == 0 {
		usage()
	}
	d, err := Push(*image, fs.Args(), *insecure, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *image, d)
	return nil
}

// Push pushes the images of the archives to ref: one archive's image as
// it is, several (one per platform) as one index of them. It returns the
// digest pushed.
func Push(ref string, archives []string, insecure bool, opts ...remote.Option) (v1.Hash, error) {
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	tag, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("--image %s: %w", ref, err)
	}
	var adds []mutate.IndexAddendum
	var imgs []v1.Image
	for _, a := range archives {
		is, ps, cleanup, err := ReadArchive(a)
		if err != nil {
			return v1.Hash{}, err
		}
		defer cleanup()
		for i, img := range is {
			imgs = append(imgs, img)
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &ps[i]}})
		}
	}
	if len(imgs) == 1 {
		if err := remote.Write(tag, imgs[0], opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
		}
		return imgs[0].Digest()
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	if err := remote.WriteIndex(tag, idx, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return idx.Digest()
}
