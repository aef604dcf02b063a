package commands

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/flows"
	"github.com/hairpinctl/hairpinctl/netops/pods"
)

func ctFlows() []flows.Flow {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890123000, time.UTC)
	a := netip.MustParseAddr
	return []flows.Flow{
		{Time: at, Event: flows.EventNew, ID: 4148901372, Proto: "tcp", State: "SYN_SENT",
			Orig:  flows.Tuple{Src: a("10.244.0.12"), Dst: a("10.96.0.10"), SPort: 41472, DPort: 80},
			Reply: flows.Tuple{Src: a("10.244.0.11"), Dst: a("10.244.0.12"), SPort: 8080, DPort: 41472},
			DNAT:  true},
		{Time: at.In(time.FixedZone("X", 3600)), Event: flows.EventExisting, ID: 1, Proto: "tcp", State: "ESTABLISHED",
			Orig:  flows.Tuple{Src: a("10.244.0.11"), Dst: a("10.96.0.10"), SPort: 37404, DPort: 80},
			Reply: flows.Tuple{Src: a("10.244.0.11"), Dst: a("10.244.0.1"), SPort: 8080, DPort: 16177},
			DNAT:  true, SNAT: true, Hairpin: true, Resync: true,
			ClientPod: &pods.Pod{Namespace: "default", Name: "web-0", UID: "u1", ContainerID: "c1", Network: "lab", Interface: "eth0", Source: pods.SourceCache}},
		{Time: at, Event: flows.EventDestroy, Proto: "udp",
			Orig:  flows.Tuple{Src: a("10.244.0.12"), Dst: a("10.96.0.10"), SPort: 5000, DPort: 53},
			Reply: flows.Tuple{Src: a("10.96.0.10"), Dst: a("10.244.0.12"), SPort: 53, DPort: 5000}},
		{Time: at, Event: flows.EventUpdate, Proto: "132", State: "COOKIE_WAIT",
			Orig:  flows.Tuple{Src: a("fd00::5"), Dst: a("fd00:96::10"), SPort: 40000, DPort: 443},
			Reply: flows.Tuple{Src: a("fd00::5"), Dst: a("fd00::1"), SPort: 8443, DPort: 61000},
			DNAT:  true, SNAT: true, Hairpin: true},
		{Event: "odd \"<name>\" é\n", Proto: "tcp", ClientPod: &pods.Pod{Namespace: "ns<&>", Name: "é\"\n", Source: pods.SourceCRI}},
	}
}

// The hand-written JSON lines are exactly what encoding/json writes for
// the documented structs, so the schema lives in one place: their tags in
// package flows.
func TestConntrackJSONMatchesEncodingJSON(t *testing.T) {
	for _, f := range ctFlows() {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendFlowJSON(nil, &f); string(got) != string(want)+"\n" {
			t.Errorf("appendFlowJSON:\n got %s\nwant %s", got, want)
		}
	}
	ov := flows.Overflow{Time: time.Now(), Event: flows.EventOverflow, Overflows: 3, Lost: 12345}
	want, _ := json.Marshal(ov)
	if got := appendOverflowJSON(nil, &ov); string(got) != string(want)+"\n" {
		t.Errorf("appendOverflowJSON:\n got %s\nwant %s", got, want)
	}
}

// Rows line up under the header and fit 80 columns for IPv4 pod traffic:
// SERVICE port/proto, CLIENT, ENDPOINT (the Service IP itself when it was
// not DNATed), SNAT the masquerade address ("missing" on a hairpin flow
// without one), EVENT "resync" for a re-listed flow, FLAGS HAIRPIN. -o
// wide adds TIME, the endpoint's port and the client's POD.
func TestConntrackRows(t *testing.T) {
	fl := ctFlows()
	noSNAT := fl[1]
	noSNAT.SNAT = false
	noSNAT.Resync = false
	fl = append(fl, noSNAT)
	last := len(fl) - 1
	names := []string{"TIME", "EVENT", "SERVICE", "STATE", "CLIENT", "ENDPOINT", "SNAT", "FLAGS", "POD"}
	wantRows := []struct {
		row    int
		fields []string // TIME EVENT SERVICE STATE CLIENT ENDPOINT SNAT FLAGS POD
	}{
		{0, []string{"05:06:07", "new", "80/tcp", "SYN_SENT", "10.244.0.12:41472", "10.244.0.11:8080", "-", "", "-"}},
		{1, []string{"06:06:07", "resync", "80/tcp", "ESTABLISHED", "10.244.0.11:37404", "10.244.0.11:8080", "10.244.0.1", "HAIRPIN", "default/web-0"}},
		{2, []string{"05:06:07", "destroy", "53/udp", "-", "10.244.0.12:5000", "10.96.0.10:53", "-", "", "-"}},
		{last, []string{"06:06:07", "existing", "80/tcp", "ESTABLISHED", "10.244.0.11:37404", "10.244.0.11:8080", "missing", "HAIRPIN", "default/web-0"}},
	}
	for _, layout := range []*ctLayout{&ctNarrow, &ctWide} {
		header := strings.TrimSuffix(string(layout.header(nil)), "\n")
		if n := len(header); n > 80 && !layout.wide {
			t.Errorf("header is %d columns", n)
		}
		cols := map[string]int{}
		for _, h := range names {
			cols[h] = strings.Index(header, h)
		}
		for _, w := range wantRows {
			i := w.row
			row := strings.TrimSuffix(string(layout.row(nil, &fl[i], palette{})), "\n")
			at := func(col string) string {
				start := cols[col]
				if start < 0 || start >= len(row) {
					return ""
				}
				end := len(row)
				for _, next := range names {
					if c := cols[next]; c > start && c < end {
						end = c
					}
				}
				return strings.TrimSpace(row[start:end])
			}
			for j, col := range names {
				want := w.fields[j]
				switch {
				case (col == "TIME" || col == "POD") && !layout.wide:
					want = ""
				case col == "ENDPOINT" && !layout.wide:
					want, _, _ = strings.Cut(want, ":")
				}
				if got := at(col); got != want {
					t.Errorf("wide=%v row %d %s = %q, want %q\n%s\n%s", layout.wide, i, col, got, want, header, row)
				}
			}
			if n := len(row); n > 80 && !layout.wide {
				t.Errorf("row %d is %d columns, over 80: %q", i, n, row)
			}
		}
	}
	// IPv6 pushes its row right but keeps every field.
	row := string(appendFlowRow(nil, &fl[3], palette{}))
	for _, want := range []string{"update", "443/132", "COOKIE_WAIT", "[fd00::5]:40000", "fd00::5 ", "fd00::1", "HAIRPIN\n"} {
		if !strings.Contains(row, want) {
			t.Errorf("IPv6 row lacks %q: %q", want, row)
		}
	}
	// On a terminal HAIRPIN is coloured, and the colour takes no column.
	plain := string(appendFlowRow(nil, &fl[last], palette{}))
	row = string(appendFlowRow(nil, &fl[last], palette{on: true}))
	if !strings.Contains(row, "\x1b[31mHAIRPIN\x1b[0m") || sgrRE.ReplaceAllString(row, "") != plain {
		t.Errorf("coloured row %q, plain %q", row, plain)
	}
}

var sgrRE = regexp.MustCompile(`\x1b\[[0-9;]*m`)
