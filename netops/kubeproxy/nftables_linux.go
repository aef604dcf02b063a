package kubeproxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/hairpinctl/hairpinctl/netops"
	"golang.org/x/sys/unix"
)

// nftConn opens a netlink connection to nf_tables in the client's
// namespace, for the cheap existence checks that pick a backend: one
// request each, no exec, and no side effect (reading a legacy table would
// instantiate it; asking nf_tables for a chain does not create it).
func nftConn(c *netops.Client) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if !c.Own() {
		opts = append(opts, nftables.WithNetNSFd(int(c.Netns())))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, nftError("open nf_tables netlink socket", err)
	}
	return conn, nil
}

// nftError classifies a google/nftables error, which carries the errno
// only as text ("... no such file or directory").
func nftError(what string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, unix.ENOENT) || strings.Contains(msg, unix.ENOENT.Error()):
		return errNFTNotFound
	case errors.Is(err, unix.EPERM) || strings.Contains(msg, unix.EPERM.Error()):
		return netops.Errorf(netops.ErrPermission, "%s: permission denied: run as root", what)
	case errors.Is(err, unix.EPROTONOSUPPORT) || strings.Contains(msg, unix.EPROTONOSUPPORT.Error()):
		// No nf_tables in this kernel: nothing can be there.
		return errNFTNotFound
	}
	return fmt.Errorf("%s: %w", what, err)
}

var errNFTNotFound = errors.New("nf_tables object not found")

func nftFamily(family int) nftables.TableFamily {
	if family == 6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// nftChainPresent reports whether nf_tables has the chain in the client's
// namespace; false when that cannot be told either.
func nftChainPresent(c *netops.Client, family int, table, chain string) bool {
	conn, err := nftConn(c)
	if err != nil {
		return false
	}
	defer conn.CloseLasting()
	ok, _ := nftChainExists(conn, family, table, chain)
	return ok
}

// nftChainExists asks nf_tables whether table (of family) has chain.
func nftChainExists(conn *nftables.Conn, family int, table, chain string) (bool, error) {
	_, err := conn.ListChain(&nftables.Table{Name: table, Family: nftFamily(family)}, chain)
	err = nftError("nf_tables: look up chain "+table+" "+chain, err)
	if err == errNFTNotFound {
		return false, nil
	}
	return err == nil, err
}

// nftTableExists asks nf_tables whether table exists in family.
func nftTableExists(conn *nftables.Conn, family int, table string) (bool, error) {
	_, err := conn.ListTableOfFamily(table, nftFamily(family))
	if err != nil && strings.Contains(err.Error(), "expected table count") {
		return false, nil
	}
	err = nftError("nf_tables: look up table "+table, err)
	if err == errNFTNotFound {
		return false, nil
	}
	return err == nil, err
}

// nftFamilyName is the nft family keyword.
func nftFamilyName(family int) string {
	if family == 6 {
		return "ip6"
	}
	return "ip"
}
