// Package reliability holds flume's reliability suite: tests that run
// primaries and followers under network faults (through internal/netproxy),
// simulated power loss (filelog over crashable vfs.MemFS), process crashes
// (kill -9 and SIGTERM of real `flume serve` processes), bad input and
// connect/disconnect cycles, and check the outcome with internal/checker.
// The package has no code of its own outside its tests.
//
// The default test command runs a short version; the soak build tag adds
// TestSoak, which runs rounds for as long as -soak.duration asks:
//
//	go test ./reliability                                   # short suite
//	go test ./reliability -run '^TestNetFaults$' -seed=1234 -v   # replay a seed
//	go test -tags soak ./reliability -run Soak -timeout 0 -soak.duration=20m -v
//
// See the README's "Reliability and soak" section.
package reliability
