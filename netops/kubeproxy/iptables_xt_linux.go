package kubeproxy

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// iptables-nft keeps most extensions as x_tables matches and targets
// inside nf_tables' compat expressions, their info in the kernel's own C
// structs (host byte order). These decoders read the structs of the
// extensions kube-proxy uses and print them as each extension's save
// function in iptables 1.8 does; any field they do not know declines the
// rule, which is then kept unrendered, never printed wrong.

// mark renders iptables-nft's native form of "-m mark [!] --mark V[/M]":
// meta mark, an optional bitwise mask, a cmp.
func (r *ruleText) mark(m *expr.Meta, rest []expr.Any) (used int, ok bool) {
	if m.SourceRegister || len(rest) == 0 {
		return 0, false
	}
	mask := uint32(0xffffffff)
	if bw, isMask := rest[0].(*expr.Bitwise); isMask {
		if bw.SourceRegister != m.Register || bw.DestRegister != m.Register || !allZero(bw.Xor) || len(bw.Mask) != 4 {
			return 0, false
		}
		mask = binary.NativeEndian.Uint32(bw.Mask)
		used, rest = 1, rest[1:]
		if len(rest) == 0 {
			return 0, false
		}
	}
	cmp, isCmp := rest[0].(*expr.Cmp)
	if !isCmp || cmp.Register != m.Register || len(cmp.Data) != 4 || (cmp.Op != expr.CmpOpEq && cmp.Op != expr.CmpOpNeq) {
		return 0, false
	}
	r.matches.WriteString(" -m mark")
	if cmp.Op == expr.CmpOpNeq {
		r.matches.WriteString(" !")
	}
	r.matches.WriteString(" --mark " + hex32(binary.NativeEndian.Uint32(cmp.Data)))
	if mask != 0xffffffff {
		r.matches.WriteString("/" + hex32(mask))
	}
	return used + 1, true
}

func hex32(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }

// xtMatch renders one x_tables match from its info struct: one case per
// match kube-proxy uses, each reading its kernel struct's layout (hence its
// length).
func (r *ruleText) xtMatch(name string, rev uint32, info []byte) bool {
	ne := binary.NativeEndian
	switch {
	case name == "comment" && rev == 0 && len(info) >= 1:
		r.matches.WriteString(" -m comment --comment ")
		r.matches.WriteString(xtablesQuote(cString(info)))
		return true
	case name == "addrtype" && rev == 1 && len(info) >= 8:
		// struct xt_addrtype_info_v1 { u16 source, dest; u32 flags; }
		src, dst, flags := ne.Uint16(info), ne.Uint16(info[2:]), ne.Uint32(info[4:])
		if flags&^3 != 0 || src == 0 && dst == 0 {
			return false
		}
		r.matches.WriteString(" -m addrtype")
		for _, t := range []struct {
			types uint16
			inv   uint32
			flag  string
		}{{src, 1, " --src-type "}, {dst, 2, " --dst-type "}} {
			if t.types == 0 {
				continue
			}
			if flags&t.inv != 0 {
				r.matches.WriteString(" !")
			}
			r.matches.WriteString(t.flag)
			sep := ""
			for i, n := range rtnNames {
				if t.types&(1<<i) != 0 {
					r.matches.WriteString(sep + n)
					sep = ","
				}
			}
		}
		return true
	case (name == "tcp" && len(info) >= 12 || name == "udp" && len(info) >= 10) && rev == 0:
		// struct xt_tcp { u16 spts[2], dpts[2]; u8 option, flg_mask,
		// flg_cmp, invflags; }, xt_udp { u16 spts[2], dpts[2]; u8
		// invflags; }: kube-proxy's "-p tcp -m tcp" before a DNAT, all
		// ports. iptables-nft writes port matches natively.
		if ne.Uint16(info) != 0 || ne.Uint16(info[2:]) != 0xffff || ne.Uint16(info[4:]) != 0 || ne.Uint16(info[6:]) != 0xffff {
			return false
		}
		tail := info[8:9]
		if name == "tcp" {
			tail = info[8:12]
		}
		if !allZero(tail) || r.proto != name {
			return false
		}
		r.matches.WriteString(" -m " + name)
		return true
	case name == "statistic" && rev == 0 && len(info) >= 8:
		// struct xt_statistic_info { u16 mode, flags; union { u32
		// probability; ... } u; ... }
		if ne.Uint16(info) != 0 || ne.Uint16(info[2:]) != 0 {
			return false // nth mode or inverted: not kube-proxy's
		}
		p := float64(ne.Uint32(info[4:])) / 0x80000000
		r.matches.WriteString(" -m statistic --mode random --probability " + strconv.FormatFloat(p, 'f', 11, 64))
		return true
	case name == "recent" && rev == 1 && len(info) >= 228:
		return r.recent(info)
	case name == "nfacct" && rev == 1 && len(info) >= 32:
		// struct xt_nfacct_match_info_v1 { char name[32]; ... }
		r.matches.WriteString(" -m nfacct --nfacct-name  " + xtablesQuote(cString(info[:32])))
		return true
	case name == "physdev" && rev == 0 && len(info) >= 66:
		// struct xt_physdev_info { char physindev[16], in_mask[16],
		// physoutdev[16], out_mask[16]; u8 invert, bitmask; }: the
		// bridge-port tests, without device names.
		invert, ops := info[64], info[65]
		if ops == 0 || ops&^(4|8|16) != 0 || invert&^ops != 0 {
			return false
		}
		r.matches.WriteString(" -m physdev")
		for _, f := range []struct {
			bit  byte
			name string
		}{{8, " --physdev-is-in"}, {16, " --physdev-is-out"}, {4, " --physdev-is-bridged"}} {
			if ops&f.bit != 0 {
				if invert&f.bit != 0 {
					r.matches.WriteString(" !")
				}
				r.matches.WriteString(f.name)
			}
		}
		return true
	case name == "conntrack" && rev == 3 && len(info) >= 154:
		// struct xt_conntrack_mtinfo3: eight 16-byte addresses and masks,
		// u32 expires_min, expires_max, u16 l4proto, four ports,
		// match_flags, invert_flags, state_mask, status_mask, ...
		match, invert, states := ne.Uint16(info[146:]), ne.Uint16(info[148:]), ne.Uint16(info[150:])
		if match != 1 || invert&^1 != 0 {
			return false // only XT_CONNTRACK_STATE
		}
		r.matches.WriteString(" -m conntrack")
		if invert != 0 {
			r.matches.WriteString(" !")
		}
		r.matches.WriteString(" --ctstate ")
		sep := ""
		for _, s := range ctStates {
			if states&s.bit != 0 {
				r.matches.WriteString(sep + s.name)
				sep = ","
				states &^= s.bit
			}
		}
		return states == 0 && sep != ""
	}
	return false
}

// rtnNames are the route types of xt_addrtype, by bit.
var rtnNames = []string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

// ctStates are xt_conntrack's state bits in the order iptables prints them.
var ctStates = []struct {
	bit  uint16
	name string
}{{1, "INVALID"}, {8, "NEW"}, {4, "RELATED"}, {2, "ESTABLISHED"}, {256, "UNTRACKED"}, {64, "SNAT"}, {128, "DNAT"}}

// recent renders struct xt_recent_mtinfo_v1 { u32 seconds, hit_count; u8
// check_set, invert; char name[200]; u8 side; union nf_inet_addr mask; }.
func (r *ruleText) recent(info []byte) bool {
	ne := binary.NativeEndian
	seconds, hits, set, invert, side := ne.Uint32(info), ne.Uint32(info[4:]), info[8], info[9], info[210]
	if invert != 0 || set&^(1|2|4|8|16|32) != 0 || side > 1 {
		return false
	}
	var b strings.Builder
	b.WriteString(" -m recent")
	for _, f := range []struct {
		bit  byte
		name string
	}{{2, " --set"}, {1, " --rcheck"}, {4, " --update"}, {8, " --remove"}} {
		if set&f.bit != 0 {
			b.WriteString(f.name)
		}
	}
	if seconds != 0 {
		b.WriteString(" --seconds " + strconv.FormatUint(uint64(seconds), 10))
	}
	if set&32 != 0 {
		b.WriteString(" --reap")
	}
	if hits != 0 {
		b.WriteString(" --hitcount " + strconv.FormatUint(uint64(hits), 10))
	}
	if set&16 != 0 {
		b.WriteString(" --rttl")
	}
	b.WriteString(" --name " + cString(info[10:210]))
	mask := info[212:228]
	if r.family == 4 {
		mask = mask[:4]
	}
	m, _ := netip.AddrFromSlice(mask)
	b.WriteString(" --mask " + m.String())
	if side == 0 {
		b.WriteString(" --rsource")
	} else {
		b.WriteString(" --rdest")
	}
	r.matches.WriteString(b.String())
	return true
}

// NF_NAT_RANGE_* flags.
const (
	natMapIPs        = 1
	natProtoSpec     = 2
	natRandom        = 4
	natRandomFully   = 16
	natPrintedRandom = natRandom | natRandomFully
)

// xtTarget renders the x_tables targets of kube-proxy's rules: one case
// per target, each reading its kernel struct's layout (hence its length).
func (r *ruleText) xtTarget(t *expr.Target) bool {
	raw, ok := t.Info.(*xt.Unknown)
	if !ok {
		return false
	}
	info := []byte(*raw)
	ne := binary.NativeEndian
	var v string
	switch {
	case t.Name == "MARK" && t.Rev == 2 && len(info) >= 8:
		// struct xt_mark_tginfo2 { u32 mark, mask; }
		v = " -j MARK --set-xmark " + hex32(ne.Uint32(info)) + "/" + hex32(ne.Uint32(info[4:]))
	case t.Name == "MASQUERADE" && t.Rev == 0:
		// IPv4: struct nf_nat_ipv4_multi_range_compat { u32 rangesize;
		// struct { u32 flags; ... } range[1]; }; IPv6: struct
		// nf_nat_range { u32 flags; ... }.
		var flags uint32
		switch {
		case r.family == 4 && len(info) >= 20 && ne.Uint32(info) == 1:
			flags = ne.Uint32(info[4:])
		case r.family == 6 && len(info) >= 40:
			flags = ne.Uint32(info)
		default:
			return false
		}
		if flags&^natPrintedRandom != 0 {
			return false
		}
		v = " -j MASQUERADE"
		if flags&natRandom != 0 {
			v += " --random"
		}
		if flags&natRandomFully != 0 {
			v += " --random-fully"
		}
	case t.Name == "DNAT" && t.Rev == 2 && len(info) >= 42:
		// struct nf_nat_range2 { u32 flags; union nf_inet_addr min_addr,
		// max_addr; __be16 min_proto, max_proto, base_proto; }
		flags := ne.Uint32(info)
		size := 16
		if r.family == 4 {
			size = 4
		}
		minA, maxA := info[4:4+size], info[20:20+size]
		minP, maxP := binary.BigEndian.Uint16(info[36:]), binary.BigEndian.Uint16(info[38:])
		if flags != natMapIPs|natProtoSpec || !bytes.Equal(minA, maxA) || minP != maxP {
			return false
		}
		a, _ := netip.AddrFromSlice(minA)
		host := a.String()
		if r.family == 6 {
			host = "[" + host + "]"
		}
		v = " -j DNAT --to-destination " + host + ":" + strconv.Itoa(int(minP))
	case t.Name == "LOG" && t.Rev == 0 && len(info) >= 32:
		// struct xt_log_info { u8 level, logflags; char prefix[30]; }
		if info[1] != 0 {
			return false
		}
		v = " -j LOG"
		if p := cString(info[2:32]); p != "" {
			v += " --log-prefix " + xtablesQuote(p)
		}
		if info[0] != 4 { // LOG_WARNING, iptables' default
			v += " --log-level " + strconv.Itoa(int(info[0]))
		}
	case t.Name == "REJECT" && t.Rev == 0 && len(info) >= 4:
		// struct ipt_reject_info / ip6t_reject_info { u32 with; }
		names := rejectNames4
		if r.family == 6 {
			names = rejectNames6
		}
		n, known := names[ne.Uint32(info)]
		if !known {
			return false
		}
		v = " -j REJECT --reject-with " + n
	default:
		return false
	}
	r.verdict = v
	return true
}

var rejectNames4 = map[uint32]string{0: "icmp-net-unreachable", 1: "icmp-host-unreachable", 2: "icmp-proto-unreachable", 3: "icmp-port-unreachable", 5: "icmp-net-prohibited", 6: "icmp-host-prohibited", 7: "tcp-reset", 8: "icmp-admin-prohibited"}
var rejectNames6 = map[uint32]string{0: "icmp6-no-route", 1: "icmp6-adm-prohibited", 3: "icmp6-addr-unreachable", 4: "icmp6-port-unreachable", 6: "tcp-reset"}

// cString is a NUL-terminated C char array.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
