package bridgeports

import (
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A link message of the AF_BRIDGE dump as the kernel lays it out: the
// ifinfomsg, then the attributes given.
func bridgeLinkMsg(index int32, attrs ...*nl.RtAttr) []byte {
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	msg.Index = index
	b := msg.Serialize()
	for _, a := range attrs {
		b = append(b, a.Serialize()...)
	}
	return b
}

// Only the bridge's own message about a port is a port: it carries the
// master and the bridge's port attributes, the STP state among them
// (br_fill_ifinfo, br_port_fill_attrs). A NIC whose driver answers the
// AF_BRIDGE dump itself (ndo_dflt_bridge_getlink) sends another message
// with its master and a PROTINFO of its embedded switch's flags, empty or
// with IFLA_BRPORT_MODE but never the state; and a link with no master is
// no port.
func TestParseBridgeLinkMsgOnlyTheBridgesMessage(t *testing.T) {
	name := nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("eth3"))
	master := nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(7))
	bridgeInfo := func() *nl.RtAttr {
		pi := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
		pi.AddRtAttr(nl.IFLA_BRPORT_STATE, []byte{3})
		pi.AddRtAttr(nl.IFLA_BRPORT_MODE, []byte{1})
		return pi
	}
	driverInfo := func(mode bool) *nl.RtAttr {
		pi := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
		if mode {
			pi.AddRtAttr(nl.IFLA_BRPORT_MODE, []byte{1})
		}
		return pi
	}
	tests := []struct {
		name string
		msg  []byte
		port bool
	}{
		{"the bridge's message", bridgeLinkMsg(4, name, master, bridgeInfo()), true},
		{"a driver's empty PROTINFO", bridgeLinkMsg(4, name, master, driverInfo(false)), false},
		{"a driver's PROTINFO with a mode", bridgeLinkMsg(4, name, master, driverInfo(true)), false},
		{"no master", bridgeLinkMsg(4, name, bridgeInfo()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok, err := parseBridgeLinkMsg(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.port {
				t.Fatalf("port = %v, want %v (%+v)", ok, tt.port, p)
			}
			if ok && (p.Name != "eth3" || p.Index != 4 || p.BridgeIndex != 7 || !p.Hairpin || p.State != "forwarding") {
				t.Errorf("parsed %+v, want eth3, index 4 on bridge 7, hairpin on, forwarding", p)
			}
		})
	}
	if _, _, err := parseBridgeLinkMsg(make([]byte, 3)); err == nil {
		t.Error("a message shorter than ifinfomsg parsed")
	}
}
