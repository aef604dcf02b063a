package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// elf is an ELF file to pack: this test binary.
func elf(t *testing.T) (string, []byte) {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

func build(t *testing.T, arch string) (string, Options) {
	t.Helper()
	bin, _ := elf(t)
	o := Options{Binary: bin, Arch: arch, Version: "v9.8.7", Revision: "abc123", Ref: "example.test/hairpinctl:v9.8.7",
		Created: time.Unix(1765000000, 0).UTC(), Source: "https://example.test/hairpinctl"}
	img, err := Image(o)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image-"+arch+".tar")
	if err := WriteArchive(out, img, o); err != nil {
		t.Fatal(err)
	}
	return out, o
}

// The archive holds an OCI layout whose one image is the binary at
// /usr/local/bin/hairpinctl, run as the entrypoint, annotated with the
// version; the same input gives the same bytes.
func TestBuildArchive(t *testing.T) {
	out, o := build(t, "amd64")
	files := map[string][]byte{}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	if got := string(files["oci-layout"]); !strings.Contains(got, `"imageLayoutVersion": "1.0.0"`) && !strings.Contains(got, `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("oci-layout: %q", got)
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	d := index.Manifests[0]
	if d.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type %s", d.MediaType)
	}
	if d.Annotations["org.opencontainers.image.ref.name"] != o.Ref || d.Annotations["io.containerd.image.name"] != o.Ref {
		t.Errorf("index annotations %v, want the ref %s", d.Annotations, o.Ref)
	}
	if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" {
		t.Errorf("platform %+v", d.Platform)
	}

	imgs, plats, cleanup, err := ReadArchive(out)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if len(imgs) != 1 || plats[0].Architecture != "amd64" {
		t.Fatalf("%d images, platforms %v", len(imgs), plats)
	}
	img := imgs[0]
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations["org.opencontainers.image.version"] != "v9.8.7" || m.Annotations["org.opencontainers.image.revision"] != "abc123" ||
		m.Annotations["org.opencontainers.image.created"] != "2025-12-06T05:46:40Z" {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	if m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("media types: config %s, layers %v", m.Config.MediaType, m.Layers)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/hairpinctl" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config: entrypoint %v, %s/%s", cf.Config.Entrypoint, cf.OS, cf.Architecture)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != "v9.8.7" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, want := elf(t)
	var names []string
	lr := tar.NewReader(rc)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == BinaryPath {
			b, _ := io.ReadAll(lr)
			if !bytes.Equal(b, want) || h.Mode != 0o755 || h.Uid != 0 {
				t.Errorf("%s: %d bytes mode %o uid %d; want the binary's %d bytes, 0755, root", h.Name, len(b), h.Mode, h.Uid, len(want))
			}
		}
	}
	if strings.Join(names, " ") != "usr/ usr/local/ usr/local/bin/ usr/local/bin/hairpinctl" {
		t.Errorf("layer holds %v", names)
	}

	again, _ := build(t, "amd64")
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same input differ")
	}
}

func TestBuildRejectsNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Image(Options{Binary: p, Arch: "amd64", Created: time.Now()}); err == nil || !strings.Contains(err.Error(), "not an ELF binary") {
		t.Errorf("err %v", err)
	}
}

// push: one archive goes up as its image, two (amd64 and arm64) as one
// index; what a client pulls back is what was built.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	amd, _ := build(t, "amd64")
	arm, _ := build(t, "arm64")

	ref := host + "/hairpinctl/hairpinctl:one"
	d, err := Push(ref, []string{amd}, true)
	if err != nil {
		t.Fatal(err)
	}
	imgs, _, cleanup, err := ReadArchive(amd)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	want, _ := imgs[0].Digest()
	r, _ := name.ParseReference(ref, name.Insecure)
	got, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := got.Digest(); gd != want || d != want {
		t.Errorf("pulled %s, pushed %s, built %s", gd, d, want)
	}

	ref = host + "/hairpinctl/hairpinctl:multi"
	if _, err := Push(ref, []string{amd, arm}, true); err != nil {
		t.Fatal(err)
	}
	r, _ = name.ParseReference(ref, name.Insecure)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, m := range im.Manifests {
		plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture+m.Platform.Variant)
	}
	if strings.Join(plats, " ") != "linux/amd64 linux/arm64v8" {
		t.Errorf("index platforms %v", plats)
	}
}
