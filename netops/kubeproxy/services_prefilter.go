package kubeproxy

// lookupKeep marks which of n KUBE-SERVICES rules a lookup keeps, given
// each rule's jump target and whether it names a looked-up address: the
// rules that do not jump to a service's chain, those that name an address,
// and those whose target shares a hash with a kept rule's.
func lookupKeep(n int, target func(i int) string, names func(i int) bool) []bool {
	keep := make([]bool, n)
	hashes := map[string]bool{}
	for i := range n {
		switch t := target(i); {
		case !isServiceChain(t):
			keep[i] = true
		case names(i):
			keep[i] = true
			hashes[chainHash(t)] = true
		}
	}
	for i := range n {
		if !keep[i] && hashes[chainHash(target(i))] {
			keep[i] = true
		}
	}
	return keep
}

func isServiceChain(name string) bool {
	switch classifyChain(name) {
	case kindSvc, kindSvl, kindExt, kindFw, kindXlb:
		return true
	}
	return false
}
