package watch

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"golang.org/x/sys/unix"
)

// Watcher is a running `hairpinctl watch` that keeps hairpin on in the
// client's namespace: a port turned off there is turned back on.
type Watcher struct {
	// PID is its process ID.
	PID int `json:"pid"`
	// Bridges are the bridges it watches; empty with All.
	Bridges []string `json:"bridges"`
	// All: it watches every bridge.
	All bool `json:"all"`
}

// Covers reports whether w keeps hairpin on for ports of bridge.
func (w Watcher) Covers(bridge string) bool {
	return w.All || slices.Contains(w.Bridges, bridge)
}

// Watchers finds the running `hairpinctl watch` processes whose namespace
// is the client's, from /proc: each one's command line (--netns, --bridge,
// --all) and environment (HAIRPINCTL_NETNS). A process it may not read
// (another user's, without root) or cannot see (another PID namespace, a
// container without hostPID) is not found: the answer can only say yes.
func Watchers(c *netops.Client) []Watcher {
	var self unix.Stat_t
	if err := unix.Fstat(int(c.Netns()), &self); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []Watcher
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		w, spec, ok := watcherOf(pid)
		if !ok {
			continue
		}
		path := filepath.Join("/proc", e.Name(), "ns", "net")
		if spec != "" {
			path = spec
			if !strings.Contains(spec, "/") {
				path = filepath.Join(netops.NetnsDir, spec)
			}
		}
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || st.Dev != self.Dev || st.Ino != self.Ino {
			continue
		}
		out = append(out, w)
	}
	return out
}

// watcherOf reads /proc/PID's command line: a hairpinctl watch, its
// bridges, and the --netns it was given (or HAIRPINCTL_NETNS).
func watcherOf(pid int) (w Watcher, netnsSpec string, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	raw, err := os.ReadFile(dir + "/cmdline")
	if err != nil || len(raw) == 0 {
		return w, "", false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if filepath.Base(args[0]) != "hairpinctl" {
		return w, "", false
	}
	w.PID = pid
	isWatch := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		val := func() string {
			if _, v, found := strings.Cut(a, "="); found {
				return v
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case a == "watch":
			isWatch = true
		case a == "--netns" || strings.HasPrefix(a, "--netns="):
			netnsSpec = val()
		case a == "--bridge" || a == "-b" || strings.HasPrefix(a, "--bridge="):
			if b := val(); !slices.Contains(w.Bridges, b) {
				w.Bridges = append(w.Bridges, b)
			}
		case a == "--all":
			w.All = true
		case a == "-o" || a == "--output" || a == "--ready-file" || a == "--resync":
			i++ // a value that could read as a command
		}
	}
	if !isWatch {
		return w, "", false
	}
	if netnsSpec == "" {
		if env, err := os.ReadFile(dir + "/environ"); err == nil {
			for _, kv := range bytes.Split(env, []byte{0}) {
				if v, found := bytes.CutPrefix(kv, []byte("HAIRPINCTL_NETNS=")); found {
					netnsSpec = string(v)
				}
			}
		}
	}
	return w, netnsSpec, true
}
