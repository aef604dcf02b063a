package commands

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops"
)

func ctFlows() []netops.ConntrackFlow {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890123000, time.UTC)
	a := netip.MustParseAddr
	return []netops.ConntrackFlow{
		{Time: at, Event: netops.ConntrackNew, ID: 4148901372, Proto: "tcp", State: "SYN_SENT",
			Orig:  netops.ConntrackTuple{Src: a("10.244.0.12"), Dst: a("10.96.0.10"), SPort: 41472, DPort: 80},
			Reply: netops.ConntrackTuple{Src: a("10.244.0.11"), Dst: a("10.244.0.12"), SPort: 8080, DPort: 41472},
			DNAT:  true},
		{Time: at.In(time.FixedZone("X", 3600)), Event: netops.ConntrackExisting, ID: 1, Proto: "tcp", State: "ESTABLISHED",
			Orig:  netops.ConntrackTuple{Src: a("10.244.0.11"), Dst: a("10.96.0.10"), SPort: 37404, DPort: 80},
			Reply: netops.ConntrackTuple{Src: a("10.244.0.11"), Dst: a("10.244.0.1"), SPort: 8080, DPort: 16177},
			DNAT:  true, SNAT: true, Hairpin: true, Resync: true},
		{Time: at, Event: netops.ConntrackDestroy, Proto: "udp",
			Orig:  netops.ConntrackTuple{Src: a("10.244.0.12"), Dst: a("10.96.0.10"), SPort: 5000, DPort: 53},
			Reply: netops.ConntrackTuple{Src: a("10.96.0.10"), Dst: a("10.244.0.12"), SPort: 53, DPort: 5000}},
		{Time: at, Event: netops.ConntrackUpdate, Proto: "132", State: "COOKIE_WAIT",
			Orig:  netops.ConntrackTuple{Src: a("fd00::5"), Dst: a("fd00:96::10"), SPort: 40000, DPort: 443},
			Reply: netops.ConntrackTuple{Src: a("fd00::5"), Dst: a("fd00::1"), SPort: 8443, DPort: 61000},
			DNAT:  true, SNAT: true, Hairpin: true},
		{Event: "odd \"<name>\" é\n", Proto: "tcp"},
	}
}

// The hand-written JSON lines are exactly what encoding/json writes for
// the documented structs, so the schema lives in one place: netops' tags.
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
	ov := netops.ConntrackOverflow{Time: time.Now(), Event: netops.ConntrackOverflowed, Overflows: 3, Lost: 12345}
	want, _ := json.Marshal(ov)
	if got := appendOverflowJSON(nil, &ov); string(got) != string(want)+"\n" {
		t.Errorf("appendOverflowJSON:\n got %s\nwant %s", got, want)
	}
}

// Rows line up under the header and fit 80 columns for IPv4 pod traffic:
// CLIENT → ENDPOINT (the Service IP itself when it was not DNATed), EVENT
// "resync" for a re-listed flow, FLAGS HAIRPIN (masqueraded, as it must
// be), HAIRPIN NO-SNAT when the masquerade is missing, SNAT otherwise.
func TestConntrackRows(t *testing.T) {
	header := string(appendFlowHeader(nil))
	cols := map[string]int{}
	names := []string{"TIME", "EVENT", "PROTO", "STATE", "CLIENT", "FLAGS"}
	for _, h := range names {
		cols[h] = utf8.RuneCountInString(header[:strings.Index(header, h)])
	}
	flows := ctFlows()
	noSNAT := flows[1]
	noSNAT.SNAT = false
	noSNAT.Resync = false
	flows = append(flows, noSNAT)
	last := len(flows) - 1
	wantRows := []struct {
		row    int
		fields []string // EVENT PROTO STATE CLIENT→ENDPOINT FLAGS
	}{
		{0, []string{"new", "tcp", "SYN_SENT", "10.244.0.12:41472 → 10.244.0.11:8080", ""}},
		{1, []string{"resync", "tcp", "ESTABLISHED", "10.244.0.11:37404 → 10.244.0.11:8080", "HAIRPIN"}},
		{2, []string{"destroy", "udp", "-", "10.244.0.12:5000 → 10.96.0.10:53", ""}},
		{last, []string{"existing", "tcp", "ESTABLISHED", "10.244.0.11:37404 → 10.244.0.11:8080", "HAIRPIN NO-SNAT"}},
	}
	for _, w := range wantRows {
		i := w.row
		row := strings.TrimSuffix(string(appendFlowRow(nil, &flows[i], palette{})), "\n")
		r := []rune(row)
		at := func(col string) string {
			// Columns are counted in runes: the arrow is one column.
			start := cols[col]
			if start >= len(r) {
				return ""
			}
			end := len(r)
			for _, next := range names {
				if c := cols[next]; c > start && c < end {
					end = c
				}
			}
			return strings.TrimSpace(string(r[start:end]))
		}
		if got := at("TIME"); got != flows[i].Time.Format(time.TimeOnly) {
			t.Errorf("row %d TIME %q", i, got)
		}
		for j, col := range names[1:] {
			if got := at(col); got != w.fields[j] {
				t.Errorf("row %d %s = %q, want %q\n%s\n%s", i, col, got, w.fields[j], header, row)
			}
		}
		if n := len(r); n > 80 && w.fields[4] != "HAIRPIN NO-SNAT" {
			t.Errorf("row %d is %d columns, over 80: %q", i, n, row)
		}
	}
	if n := utf8.RuneCountInString(strings.TrimSuffix(header, "\n")); n > 80 {
		t.Errorf("header is %d columns", n)
	}
	// IPv6 pushes its row right but keeps every field.
	row := string(appendFlowRow(nil, &flows[3], palette{}))
	for _, want := range []string{"update", "132", "COOKIE_WAIT", "[fd00::5]:40000 → [fd00::5]:8443", "HAIRPIN\n"} {
		if !strings.Contains(row, want) {
			t.Errorf("IPv6 row lacks %q: %q", want, row)
		}
	}
	// On a terminal HAIRPIN is coloured.
	if row := string(appendFlowRow(nil, &flows[1], palette{on: true})); !strings.Contains(row, "\x1b[33mHAIRPIN\x1b[0m") {
		t.Errorf("coloured row %q", row)
	}
}
