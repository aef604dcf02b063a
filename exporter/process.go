package exporter

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100
// on every architecture Linux exports to user space.
const userHZ = 100

// processFamilies returns the standard process_* and go_* series a
// scraped process is expected to have (the names and help client_golang's
// collectors use, so dashboards for them work): CPU time, memory, file
// descriptors and start time from /proc/self, goroutines and the Go
// version from the runtime. What cannot be read is left out.
func processFamilies() []Family {
	one := func(name, help, kind string, v float64, labels ...Label) Family {
		return Family{Name: name, Help: help, Kind: kind, Series: []Series{{Labels: labels, Value: v}}}
	}
	fams := []Family{
		one("go_goroutines", "Number of goroutines that currently exist.", gauge, float64(runtime.NumGoroutine())),
		one("go_info", "Information about the Go environment.", gauge, 1, Label{"version", runtime.Version()}),
	}
	if st, err := readProcStat(); err == nil {
		fams = append(fams,
			one("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counter, st.cpuSeconds),
			one("process_virtual_memory_bytes", "Virtual memory size in bytes.", gauge, st.vsize),
			one("process_resident_memory_bytes", "Resident memory size in bytes.", gauge, st.rss))
		if st.start > 0 {
			fams = append(fams, one("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", gauge, st.start))
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		fams = append(fams, one("process_open_fds", "Number of open file descriptors.", gauge, float64(len(fds))))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		fams = append(fams, one("process_max_fds", "Maximum number of open file descriptors.", gauge, float64(lim.Cur)))
	}
	return fams
}

// procStat is what processFamilies reads from /proc/self/stat.
type procStat struct {
	cpuSeconds, vsize, rss, start float64
}

// readProcStat reads /proc/self/stat (proc(5): the fields after the
// command's closing parenthesis, which the command itself may contain)
// and the boot time from /proc/stat, to turn the start time into Unix
// time.
func readProcStat() (procStat, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, strconv.ErrSyntax
	}
	// f[0] is field 3 (state): field n is f[n-3].
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return procStat{}, strconv.ErrSyntax
	}
	var v [5]float64
	for j, n := range []int{14, 15, 22, 23, 24} {
		if v[j], err = strconv.ParseFloat(f[n-3], 64); err != nil {
			return procStat{}, err
		}
	}
	st := procStat{cpuSeconds: (v[0] + v[1]) / userHZ, vsize: v[3], rss: v[4] * float64(os.Getpagesize())}
	if s, err := os.ReadFile("/proc/stat"); err == nil {
		for line := range strings.SplitSeq(string(s), "\n") {
			if rest, ok := strings.CutPrefix(line, "btime "); ok {
				if bt, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
					st.start = bt + v[2]/userHZ
				}
				break
			}
		}
	}
	return st, nil
}
