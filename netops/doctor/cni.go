package doctor

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// DefaultCNIConfDir is where kubelet's container runtime (containerd,
// CRI-O) reads CNI network configurations.
const DefaultCNIConfDir = "/etc/cni/net.d"

// cniExtensions are the file names libcni's ConfFiles loads.
var cniExtensions = []string{".conf", ".conflist", ".json"}

// cniFile is one CNI network configuration file as doctor reads it: only
// the plugins that decide a pod port's hairpin mode.
type cniFile struct {
	// Path is the file's path.
	Path string
	// Name is the network's name.
	Name string
	// Plugins are the file's plugins in order (one for a .conf).
	Plugins []cniPlugin
	// Err says why the file could not be read or parsed; the runtime skips
	// such a file too.
	Err error
}

// cniPlugin is one plugin of a network configuration.
type cniPlugin struct {
	// Type is the plugin's type: bridge, flannel, calico, ...
	Type string
	// Bridges says the plugin puts pods on a Linux bridge: the bridge
	// plugin itself, or flannel delegating to it (its default).
	Bridges bool
	// Bridge is the bridge's name ("cni0" when the config does not say:
	// the bridge plugin's default).
	Bridge string
	// Via is "delegate" when the bridge settings sit in flannel's
	// "delegate" object, "" when they are the plugin's own.
	Via string
	// HairpinMode and PromiscMode are the bridge plugin's settings; both
	// default to false.
	HairpinMode bool
	PromiscMode bool
}

// bridgePluginConf is the part of a bridge plugin configuration (or of
// flannel's delegate) that concerns hairpin.
type bridgePluginConf struct {
	Type        string `json:"type"`
	Bridge      string `json:"bridge"`
	HairpinMode bool   `json:"hairpinMode"`
	PromiscMode bool   `json:"promiscMode"`
}

type pluginConf struct {
	bridgePluginConf
	Delegate *bridgePluginConf `json:"delegate"`
}

type netConf struct {
	Name    string       `json:"name"`
	Plugins []pluginConf `json:"plugins"`
	pluginConf
}

// parseCNIConfig parses one .conf or .conflist file's bytes. A .conflist
// holds "plugins"; a .conf is a single plugin at the top level. libcni
// decides by the extension; so does this (a .json is either, as in libcni
// it is read as a .conf, but a "plugins" list is honoured too).
func parseCNIConfig(path string, data []byte) cniFile {
	f := cniFile{Path: path, Plugins: []cniPlugin{}}
	var nc netConf
	if err := json.Unmarshal(data, &nc); err != nil {
		f.Err = fmt.Errorf("%s is not valid JSON: %w", path, err)
		return f
	}
	f.Name = nc.Name
	isList := strings.HasSuffix(path, ".conflist") || (nc.Plugins != nil && nc.Type == "")
	if isList {
		if len(nc.Plugins) == 0 {
			f.Err = fmt.Errorf("%s has no plugins", path)
			return f
		}
		for _, p := range nc.Plugins {
			f.Plugins = append(f.Plugins, pluginOf(p))
		}
		return f
	}
	if nc.Type == "" {
		f.Err = fmt.Errorf("%s has no plugin type", path)
		return f
	}
	f.Plugins = append(f.Plugins, pluginOf(nc.pluginConf))
	return f
}

// pluginOf reads the hairpin-relevant settings of one plugin. flannel runs
// the bridge plugin with its "delegate" object (type bridge unless the
// delegate says otherwise), so the delegate's settings are what count.
func pluginOf(p pluginConf) cniPlugin {
	out := cniPlugin{Type: p.Type}
	conf := &p.bridgePluginConf
	switch p.Type {
	case "bridge":
		out.Bridges = true
	case "flannel":
		conf = p.Delegate
		if conf == nil {
			conf = &bridgePluginConf{}
		}
		out.Via = "delegate"
		out.Bridges = conf.Type == "" || conf.Type == "bridge"
	default:
		return out
	}
	if !out.Bridges {
		return out
	}
	out.Bridge = conf.Bridge
	if out.Bridge == "" {
		out.Bridge = "cni0"
	}
	out.HairpinMode = conf.HairpinMode
	out.PromiscMode = conf.PromiscMode
	return out
}

// loadCNIConfigs reads every configuration in dir in the order libcni's
// ConfFiles returns them (lexical), which is the order the runtime tries
// them: the first valid one is the network new pods get. A directory that
// does not exist is reported with os.ErrNotExist (ConfFiles itself calls
// it empty).
//
// The files are parsed here rather than with libcni's ConfListFromBytes:
// its NetworkConfigList keeps each plugin as its type and raw bytes, so the
// hairpin settings (and flannel's delegate) need this decoding anyway, and
// its stricter rules (a name required, a .json list refused) would change
// which file doctor takes for the active network.
func loadCNIConfigs(dir string) ([]cniFile, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	paths, err := libcni.ConfFiles(dir, cniExtensions)
	if err != nil {
		return nil, err
	}
	files := []cniFile{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			files = append(files, cniFile{Path: p, Plugins: []cniPlugin{}, Err: fmt.Errorf("read %s: %w", p, err)})
			continue
		}
		files = append(files, parseCNIConfig(p, data))
	}
	return files, nil
}
