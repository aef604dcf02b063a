package watch

import "time"

// Options selects what Watch keeps hairpin on for.
type Options struct {
	// Bridges names the bridges whose ports are kept on. A bridge that
	// does not exist yet is waited for; one deleted and re-created is
	// picked up again.
	Bridges []string
	// All keeps every port of every bridge on; Bridges must then be empty.
	All bool
	// Resync re-lists every port this often as a safety net for anything
	// the notifications did not say; 0 never does.
	Resync time.Duration
	// AnyPort keeps every port on, uplinks (NIC, vxlan, tap) included;
	// without it only pods' ports are (see NotPodPort), and each other port
	// is reported once as skipped.
	AnyPort bool
	// ReceiveBufferSize is the subscription socket's receive buffer in
	// bytes; 0 asks for DefaultReceiveBuffer. A small buffer makes the
	// kernel drop notifications (ENOBUFS) sooner, which Watch survives by
	// re-listing: the tests use that to force an overflow.
	ReceiveBufferSize int
}

// DefaultReceiveBuffer is the subscription socket's receive buffer:
// a veth pair joining a bridge costs about 10 KiB of notifications, so 4 MiB
// absorbs a burst of a few hundred pods before the kernel drops any.
const DefaultReceiveBuffer = 4 << 20

// Event kinds.
const (
	// KindReady: the initial pass is done and the subscription is up;
	// from now on no port is missed. Ports counts the selected ports.
	KindReady = "ready"
	// KindEnabled: hairpin was turned on for Port; Cause says why.
	KindEnabled = "enabled"
	// KindFailed: turning hairpin on for Port failed; Error says why.
	KindFailed = "failed"
	// KindBridgeAdded: a selected bridge appeared (or was re-created).
	KindBridgeAdded = "bridge-added"
	// KindBridgeRemoved: a selected bridge was deleted; Watch waits for it.
	KindBridgeRemoved = "bridge-removed"
	// KindBridgeMissing: a selected bridge does not exist yet at start.
	KindBridgeMissing = "bridge-missing"
	// KindResync: every port was re-listed; Cause says why ("overflow",
	// "subscription-error", "periodic") and Error holds the socket error.
	KindResync = "resync"
	// KindError: a transient error Watch recovers from (a failed
	// resubscribe, a failed re-list); it retries.
	KindError = "error"
	// KindSkipped: Port, on a selected bridge, is not a pod's port and is
	// left alone (Error says what it is); said once per port.
	KindSkipped = "skipped"
)

// Causes of a KindEnabled event.
const (
	// CauseStart: the port was off when Watch started.
	CauseStart = "start"
	// CauseJoined: the port joined a selected bridge.
	CauseJoined = "joined"
	// CauseTurnedOff: hairpin was on and something turned it off.
	CauseTurnedOff = "turned-off"
	// CauseResync: the port was found off by a re-list.
	CauseResync = "resync"
)

// Causes of a KindResync event.
const (
	// ResyncOverflow: the kernel dropped notifications (ENOBUFS).
	ResyncOverflow = "overflow"
	// ResyncSubscription: the subscription ended for another reason.
	ResyncSubscription = "subscription-error"
	// ResyncPeriodic: Options.Resync elapsed.
	ResyncPeriodic = "periodic"
)

// Event is one thing Watch did or saw. Fields that do not apply to
// a kind are left empty.
type Event struct {
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Kind is one of the Kind* kinds: ready, enabled, failed, skipped,
	// bridge-added, bridge-removed, bridge-missing, resync, error.
	Kind string `json:"kind"`
	// Port is the port's interface name.
	Port string `json:"port,omitempty"`
	// Index is the port's (or, for bridge events, the bridge's) ifindex.
	Index int `json:"index,omitempty"`
	// Bridge is the bridge's name; in a ready event, the selected
	// bridges, comma-separated (empty with All).
	Bridge string `json:"bridge,omitempty"`
	// Cause says why: see the Cause* and Resync* constants.
	Cause string `json:"cause,omitempty"`
	// Ports counts the selected ports (ready events).
	Ports int `json:"ports,omitempty"`
	// Error is the failure, in one line.
	Error string `json:"error,omitempty"`
}
