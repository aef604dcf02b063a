package exporter

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Kinds of series, as the text format's TYPE line names them.
const (
	gauge   = "gauge"
	counter = "counter"
)

// Family is one metric: its name, help, kind and series, ready to be
// written in the Prometheus text exposition format (version 0.0.4).
type Family struct {
	// Name is the metric name.
	Name string
	// Help is the HELP line's text.
	Help string
	// Kind is "gauge" or "counter".
	Kind string
	// Series are the samples, one per set of label values.
	Series []Series
}

// Series is one sample of a Family.
type Series struct {
	// Labels are name, value pairs.
	Labels []Label
	// Value is the sample's value.
	Value float64
}

// Label is one label of a Series.
type Label struct {
	// Name is the label's name.
	Name string
	// Value is the label's value.
	Value string
}

// WriteText writes fams in the text exposition format as client_golang
// writes a registry's: families by name, each series' labels by name and
// the series by their label values. A family without series is left out.
func WriteText(w io.Writer, fams []Family) error {
	fams = slices.Clone(fams)
	slices.SortFunc(fams, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		if len(f.Series) == 0 {
			continue
		}
		series := make([]Series, len(f.Series))
		for i, s := range f.Series {
			series[i] = Series{Labels: slices.Clone(s.Labels), Value: s.Value}
			slices.SortFunc(series[i].Labels, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
		}
		slices.SortStableFunc(series, func(a, b Series) int {
			return slices.CompareFunc(a.Labels, b.Labels, func(x, y Label) int { return strings.Compare(x.Value, y.Value) })
		})
		bw.WriteString("# HELP " + f.Name + " " + helpEscaper.Replace(f.Help) + "\n")
		bw.WriteString("# TYPE " + f.Name + " " + f.Kind + "\n")
		for _, s := range series {
			bw.WriteString(f.Name)
			for i, l := range s.Labels {
				if i == 0 {
					bw.WriteByte('{')
				} else {
					bw.WriteByte(',')
				}
				bw.WriteString(l.Name + `="` + labelEscaper.Replace(l.Value) + `"`)
			}
			if len(s.Labels) > 0 {
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(formatFloat(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// formatFloat writes a sample value as the text format spells it.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// vec holds the series of one family by label values, safe for
// concurrent use: the watcher's events add to it while a scrape reads it.
type vec struct {
	name, help, kind string
	labels           []string
	constLabels      []Label

	mu   sync.Mutex
	vals map[string]*Series
	keys []string // insertion order, for a stable read
}

func newVec(name, help, kind string, labels ...string) *vec {
	return &vec{name: name, help: help, kind: kind, labels: labels, vals: map[string]*Series{}}
}

// with returns the series of the label values lv, made at 0 if new; the
// caller holds v.mu.
func (v *vec) with(lv []string) *Series {
	if len(lv) != len(v.labels) {
		panic("exporter: " + v.name + ": want " + strconv.Itoa(len(v.labels)) + " label values")
	}
	key := strings.Join(lv, "\xff")
	s, ok := v.vals[key]
	if !ok {
		s = &Series{Labels: slices.Clone(v.constLabels)}
		for i, n := range v.labels {
			s.Labels = append(s.Labels, Label{Name: n, Value: lv[i]})
		}
		v.vals[key] = s
		v.keys = append(v.keys, key)
	}
	return s
}

// Touch makes the series of lv exist, at 0 if new.
func (v *vec) Touch(lv ...string) { v.Add(0, lv...) }

// Add adds d to the series of lv.
func (v *vec) Add(d float64, lv ...string) {
	v.mu.Lock()
	v.with(lv).Value += d
	v.mu.Unlock()
}

// Set sets the series of lv to x.
func (v *vec) Set(x float64, lv ...string) {
	v.mu.Lock()
	v.with(lv).Value = x
	v.mu.Unlock()
}

// Reset drops every series.
func (v *vec) Reset() {
	v.mu.Lock()
	clear(v.vals)
	v.keys = v.keys[:0]
	v.mu.Unlock()
}

// Family returns a copy of v's series.
func (v *vec) Family() Family {
	v.mu.Lock()
	defer v.mu.Unlock()
	f := Family{Name: v.name, Help: v.help, Kind: v.kind, Series: make([]Series, 0, len(v.keys))}
	for _, k := range v.keys {
		f.Series = append(f.Series, *v.vals[k])
	}
	return f
}
