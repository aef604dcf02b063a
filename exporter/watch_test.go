package exporter

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/watch"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// The series follow the events and the lister; /readyz follows the ready
// event; a failed listing reads hairpinctl_up 0 and leaves the rest.
func TestWatch(t *testing.T) {
	var listErr error
	ports := []bridgeports.Port{{Bridge: "cni0", Name: "veth1", Hairpin: true}, {Bridge: "cni0", Name: "veth2"}}
	w := NewWatch("v1.2.3", func() ([]string, []bridgeports.Port, error) {
		return []string{"cni0", "cni1"}, ports, listErr
	}, true)
	h := w.Handler()
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", code)
	}
	for _, ev := range []watch.Event{
		{Kind: watch.KindEnabled, Bridge: "cni0", Cause: watch.CauseStart},
		{Kind: watch.KindEnabled, Bridge: "cni0", Cause: watch.CauseStart},
		{Kind: watch.KindReady},
		{Kind: watch.KindEnabled, Bridge: "cni0", Cause: watch.CauseJoined},
		{Kind: watch.KindFailed, Bridge: "cni0"},
		{Kind: watch.KindResync, Cause: watch.ResyncOverflow},
		{Kind: watch.KindError},
	} {
		w.Observe(ev)
	}
	w.SetDoctor(&doctor.Report{Checks: []doctor.Check{{ID: "bridge-hairpin", Status: doctor.StatusFail}}}, time.Unix(1765000000, 0))
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz once ready: %d, want 200", code)
	}
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`hairpinctl_bridge_ports{bridge="cni0",hairpin="on"} 1`,
		`hairpinctl_bridge_ports{bridge="cni0",hairpin="off"} 1`,
		`hairpinctl_bridge_ports{bridge="cni1",hairpin="off"} 0`,
		`hairpinctl_watch_fixes_total{bridge="cni0",cause="start"} 2`,
		`hairpinctl_watch_fixes_total{bridge="cni0",cause="joined"} 1`,
		`hairpinctl_watch_failures_total{bridge="cni0"} 1`,
		`hairpinctl_watch_resyncs_total{cause="overflow"} 1`,
		`hairpinctl_watch_resyncs_total{cause="periodic"} 0`,
		`hairpinctl_watch_errors_total 1`,
		`hairpinctl_watch_ready 1`,
		`hairpinctl_up 1`,
		`hairpinctl_build_info{version="v1.2.3"} 1`,
		`hairpinctl_doctor_check_status{check="bridge-hairpin",status="fail"} 1`,
		`hairpinctl_doctor_check_status{check="bridge-hairpin",status="pass"} 0`,
		`hairpinctl_last_success_timestamp_seconds 1.765e+09`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("no %q in /metrics:\n%s", want, body)
		}
	}
	// A check gone from the next report leaves the metrics.
	w.SetDoctor(&doctor.Report{Checks: []doctor.Check{{ID: "conntrack", Status: doctor.StatusPass}}}, time.Unix(1765000060, 0))
	listErr = errors.New("netlink: no buffer space")
	_, body = get(t, h, "/metrics")
	if strings.Contains(body, `check="bridge-hairpin"`) || !strings.Contains(body, `hairpinctl_doctor_check_status{check="conntrack",status="pass"} 1`) {
		t.Errorf("doctor series not replaced:\n%s", body)
	}
	if !strings.Contains(body, "hairpinctl_up 0\n") || strings.Contains(body, "hairpinctl_bridge_ports{") {
		t.Errorf("a failed listing: want hairpinctl_up 0 and no port series:\n%s", body)
	}
	if !strings.Contains(body, "hairpinctl_watch_fixes_total") {
		t.Errorf("a failed listing dropped the other series:\n%s", body)
	}
}
