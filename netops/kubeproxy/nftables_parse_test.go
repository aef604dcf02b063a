package kubeproxy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every nftables fixture as `nft list table` printed it after `nft -f`
// of kube-proxy's own transaction text.
func TestParseNFTGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.list"))
	if len(files) < 2 {
		t.Fatalf("only %d nft fixtures in %s", len(files), servicesTestdata)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			res := parseFixture(t, path, true)
			checkGolden(t, path, marshalView(t, viewOf(res)))
		})
	}
}

func TestParseNFTServiceName(t *testing.T) {
	tests := []struct{ chain, want string }{
		{"service-ULMVA6XW-ns1/svc1/tcp/p80", "ns1/svc1:p80"},
		{"local-2EV6VCNN-ns8/svc8/tcp/http", "ns8/svc8:http"},
		{"service-ZCC5IRXX-ns7/svc7/udp/", "ns7/svc7"},
		{"endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80", "ns1/svc1:p80"},
		{"endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80", "ns1/svc1:p80"},
		{"service-ABCDEFGH-" + strings.Repeat("n", 63) + "/" + strings.Repeat("s", 40) + "...", ""},
		{"services", ""},
		{"service-X-a/b", ""},
	}
	for _, tt := range tests {
		if got := nftServiceName(tt.chain); got != tt.want {
			t.Errorf("nftServiceName(%q) = %q, want %q", tt.chain, got, tt.want)
		}
	}
}

func TestParseNFTJunk(t *testing.T) {
	in := `table ip kube-proxy {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.0.0.1 . tcp . 80 : goto service-AAAAAAAA-a/b/tcp/p,
			     garbage,
			     10.0.0.2 . tcp . 99999 : goto service-BBBBBBBB-a/c/tcp/p }
	}
	chain service-AAAAAAAA-a/b/tcp/p {
		numgen random mod 2 vmap { 0 : goto endpoint-CCCCCCCC-a/b/tcp/p__10.1.1.1/80, 1 : goto endpoint-DDDDDDDD-a/b/tcp/p__10.1.1.2/80 }
		counter log prefix "what"
	}
	chain endpoint-CCCCCCCC-a/b/tcp/p__10.1.1.1/80 {
		ip saddr 10.1.1.1 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.1.1.1:80
	}
	chain endpoint-DDDDDDDD-a/b/tcp/p__10.1.1.2/80 {
		meta l4proto tcp dnat to 10.1.1.2
	}
	flowtable f {
		hook ingress priority 0; devices = { lo };
	}
}
`
	res, err := parseNFTList(strings.NewReader(in), 4, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unparsed != 3 {
		t.Errorf("unparsed = %d, want 3 (garbage element, bad port, log rule): %q", res.Unparsed, res.UnparsedRules)
	}
	if len(res.Services) != 1 {
		t.Fatalf("services = %+v", res.Services)
	}
	s := res.Services[0]
	if s.Namespace != "a" || s.Name != "b" || len(s.Endpoints) != 2 || !s.Endpoints[0].HairpinMasq || s.Endpoints[1].HairpinMasq || s.Endpoints[0].Share != 0.5 {
		t.Errorf("service = %+v", s)
	}
}

func FuzzParseNFTList(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.list"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("table ip kube-proxy {\n\tchain service-AAAAAAAA-a/b/tcp/p {\n\t\tnumgen random mod 0 vmap { 0-9 : goto x }\n\t}\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := parseNFTList(bytes.NewReader(data), 4, true, nil)
		if err != nil {
			t.Fatalf("parse error on in-memory input: %v", err)
		}
		for _, s := range res.Services {
			if s.Endpoints == nil {
				t.Fatalf("nil endpoints in %+v", s)
			}
		}
	})
}
