package doctor

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const cniTestdata = "testdata/cni"

func readCNI(t *testing.T, name string) cniFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cniTestdata, name))
	if err != nil {
		t.Fatal(err)
	}
	return parseCNIConfig(filepath.Join(cniTestdata, name), b)
}

func TestParseCNIConfig(t *testing.T) {
	tests := []struct {
		file    string
		name    string
		plugins []cniPlugin
		err     string
	}{
		{file: "10-flannel.conflist", name: "cbr0", plugins: []cniPlugin{
			{Type: "flannel", Bridges: true, Bridge: "cni0", Via: "delegate", HairpinMode: true},
			{Type: "portmap"},
		}},
		{file: "flannel-nohairpin.conflist", name: "cbr0", plugins: []cniPlugin{
			{Type: "flannel", Bridges: true, Bridge: "cni0", Via: "delegate"},
			{Type: "portmap"},
		}},
		// flannel delegating to another plugin puts pods on no bridge.
		{file: "flannel-ipvlan.conf", name: "mynet", plugins: []cniPlugin{
			{Type: "flannel", Via: "delegate"},
		}},
		{file: "bridge.conf", name: "mynet", plugins: []cniPlugin{
			{Type: "bridge", Bridges: true, Bridge: "mynet0", HairpinMode: true},
		}},
		{file: "bridge-nohairpin.conflist", name: "k8s-pod-network", plugins: []cniPlugin{
			{Type: "bridge", Bridges: true, Bridge: "cni0"},
			{Type: "portmap"},
		}},
		{file: "bridge-hairpin-promisc.conflist", name: "k8s-pod-network", plugins: []cniPlugin{
			{Type: "bridge", Bridges: true, Bridge: "cni0", HairpinMode: true, PromiscMode: true},
		}},
		{file: "bridge-promisc.conflist", name: "k8s-pod-network", plugins: []cniPlugin{
			{Type: "bridge", Bridges: true, Bridge: "cbr0", PromiscMode: true},
		}},
		{file: "10-calico.conflist", name: "k8s-pod-network", plugins: []cniPlugin{
			{Type: "calico"}, {Type: "portmap"}, {Type: "bandwidth"},
		}},
		{file: "broken.conf", err: "is not valid JSON"},
		{file: "empty-plugins.conflist", err: "has no plugins"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f := readCNI(t, tt.file)
			if tt.err != "" {
				if f.Err == nil || !strings.Contains(f.Err.Error(), tt.err) || !strings.Contains(f.Err.Error(), tt.file) {
					t.Fatalf("error %v, want one naming the file and containing %q", f.Err, tt.err)
				}
				return
			}
			if f.Err != nil {
				t.Fatal(f.Err)
			}
			if f.Name != tt.name || !reflect.DeepEqual(f.Plugins, tt.plugins) {
				t.Errorf("got %q %+v\nwant %q %+v", f.Name, f.Plugins, tt.name, tt.plugins)
			}
		})
	}
}

// A .conf without a type, and a bare plugin under .json, as libcni reads them.
func TestParseCNIConfigShapes(t *testing.T) {
	if f := parseCNIConfig("x.conf", []byte(`{"name":"n"}`)); f.Err == nil || !strings.Contains(f.Err.Error(), "no plugin type") {
		t.Errorf("typeless .conf: %v", f.Err)
	}
	f := parseCNIConfig("x.json", []byte(`{"name":"n","type":"bridge","hairpinMode":true}`))
	if f.Err != nil || len(f.Plugins) != 1 || !f.Plugins[0].HairpinMode || f.Plugins[0].Bridge != "cni0" {
		t.Errorf(".json plugin: %+v", f)
	}
	f = parseCNIConfig("x.json", []byte(`{"name":"n","plugins":[{"type":"bridge"}]}`))
	if f.Err != nil || len(f.Plugins) != 1 || f.Plugins[0].Type != "bridge" {
		t.Errorf(".json list: %+v", f)
	}
	// hairpinMode must be a JSON boolean, as the bridge plugin insists.
	if f := parseCNIConfig("x.conf", []byte(`{"name":"n","type":"bridge","hairpinMode":"true"}`)); f.Err == nil {
		t.Errorf(`"hairpinMode": "true" parsed: %+v`, f)
	}
}

// The runtime loads .conf, .conflist and .json in lexical order; other
// files are not configurations.
func TestLoadCNIConfigs(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{
		"20-flannel.conflist":  "10-flannel.conflist",
		"10-broken.conf":       "broken.conf",
		"99-calico.conflist":   "10-calico.conflist",
		"05-notes.md":          "bridge.conf",
		"15-bridge.conf.bak":   "bridge.conf",
		"30-flannel-nohp.json": "flannel-nohairpin.conflist",
	} {
		b, err := os.ReadFile(filepath.Join(cniTestdata, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "00-dir.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := loadCNIConfigs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f.Path))
	}
	want := []string{"10-broken.conf", "20-flannel.conflist", "30-flannel-nohp.json", "99-calico.conflist"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
	// The broken file is skipped, as the runtime skips it: the flannel
	// file is the one new pods get, and it sets hairpinMode.
	f := &doctorFacts{cniDir: dir, cniFiles: files}
	c := checkCNI(f)
	if c.Status != StatusPass || !strings.Contains(c.Finding, "20-flannel.conflist") {
		t.Errorf("checkCNI = %s %q", c.Status, c.Finding)
	}
	details := strings.Join(c.Details, "\n")
	for _, want := range []string{"skipped, as the runtime does", "30-flannel-nohp.json: not used (", "99-calico.conflist: not used ("} {
		if !strings.Contains(details, want) {
			t.Errorf("details lack %q:\n%s", want, details)
		}
	}

	if _, err := loadCNIConfigs(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// Check 7 on each kind of configuration: the verdict, and a fix naming the file.
func TestCheckCNI(t *testing.T) {
	tests := []struct {
		file    string
		status  CheckStatus
		finding string
		fix     string
	}{
		{"10-flannel.conflist", StatusPass, `plugin flannel (its delegate) sets "hairpinMode": true: new pods on cni0 come up with hairpin on`, ""},
		{"bridge.conf", StatusPass, `plugin bridge sets "hairpinMode": true: new pods on mynet0`, ""},
		{"flannel-nohairpin.conflist", StatusWarn, `plugin flannel (its delegate) lacks "hairpinMode": true: new pods on cni0 come up with hairpin off`,
			`set "hairpinMode": true in testdata/cni/flannel-nohairpin.conflist (or keep ports on: hairpinctl watch --bridge cni0)`},
		{"bridge-nohairpin.conflist", StatusWarn, `plugin bridge lacks "hairpinMode": true`, `set "hairpinMode": true in testdata/cni/bridge-nohairpin.conflist`},
		{"bridge-promisc.conflist", StatusWarn, "promiscMode is set: promiscuous-bridge mode, which needs duplicate suppression", `set "hairpinMode": true`},
		{"bridge-hairpin-promisc.conflist", StatusFail, "sets hairpinMode and promiscMode together: the bridge plugin rejects that, so new pods fail to start",
			`remove "promiscMode" from testdata/cni/bridge-hairpin-promisc.conflist`},
		{"10-calico.conflist", StatusSkip, "uses calico, portmap, bandwidth, no Linux bridge: hairpin mode does not apply", ""},
		{"flannel-ipvlan.conf", StatusSkip, "no Linux bridge", ""},
		{"broken.conf", StatusWarn, "no file in testdata/cni can be loaded (1 file): new pods cannot start", ""},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f := &doctorFacts{cniDir: cniTestdata, cniFiles: []cniFile{readCNI(t, tt.file)}}
			c := checkCNI(f)
			fixOK := strings.HasPrefix(c.Fix, tt.fix) && (tt.fix == "") == (c.Fix == "")
			if c.Status != tt.status || !strings.Contains(c.Finding, tt.finding) || !fixOK {
				t.Errorf("got %s %q fix %q\nwant %s %q fix %q", c.Status, c.Finding, c.Fix, tt.status, tt.finding, tt.fix)
			}
		})
	}
	// With --netns the watch command in the fix names the namespace.
	f := &doctorFacts{netns: "node1", cniDir: cniTestdata, cniFiles: []cniFile{readCNI(t, "bridge-nohairpin.conflist")}}
	if c := checkCNI(f); !strings.HasSuffix(c.Fix, "hairpinctl watch --bridge cni0 --netns node1)") {
		t.Errorf("fix %q does not name the netns", c.Fix)
	}
	f = &doctorFacts{cniDir: "/etc/cni/net.d", cniErr: fs.ErrNotExist}
	if c := checkCNI(f); c.Status != StatusSkip || c.Finding != "no CNI configuration directory /etc/cni/net.d" {
		t.Errorf("no directory: %s %q", c.Status, c.Finding)
	}
	f = &doctorFacts{cniDir: "/etc/cni/net.d", cniErr: &fs.PathError{Op: "open", Path: "/etc/cni/net.d", Err: fs.ErrPermission}}
	if c := checkCNI(f); c.Status != StatusSkip || c.Fix != "run as root" {
		t.Errorf("unreadable directory: %s %q %q", c.Status, c.Finding, c.Fix)
	}
	f = &doctorFacts{cniDir: cniTestdata, cniFiles: []cniFile{}}
	if c := checkCNI(f); c.Status != StatusSkip || !strings.Contains(c.Finding, "no valid CNI configuration") {
		t.Errorf("empty directory: %s %q", c.Status, c.Finding)
	}
}
