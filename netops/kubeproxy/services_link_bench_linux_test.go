package kubeproxy

import (
	"strings"
	"testing"
)

// BenchmarkIPTablesSaveText reads and links iptables-save text of 10,000
// Services × 5 endpoints, no kernel involved: the parser and the linker.
//
//	go test -run '^$' -bench SaveText -benchmem ./netops
func BenchmarkIPTablesSaveText(b *testing.B) {
	text := kubeProxyText(10000, 5, 0)
	for b.Loop() {
		res, err := parseIPTablesSave(strings.NewReader(text), 4, BackendIPTablesNFT, false, nil)
		if err != nil || len(res.Services) != 10000 || res.Unparsed != 0 {
			b.Fatalf("%v: %d services, %d unparsed", err, len(res.Services), res.Unparsed)
		}
	}
}
