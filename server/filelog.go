package server

import (
	"errors"
	"time"

	"github.com/flume-go/flume"
)

// fsyncHooked reports whether the file log reports fsync latencies.
const fsyncHooked = false

// openFileLog opens the file log; placeholder until filelog lands.
func openFileLog(dir string, cfg Config, onFsync func(time.Duration)) (flume.Log, error) {
	return nil, errors.New("server: filelog not available yet")
}

// OpenLog opens (creating if needed) the file log in dir with an fsync
// policy ("always", "interval", "never"; "" is "always"), as a server
// does. It is for tools (demo, bench) that run DBs without a Server.
func OpenLog(dir, fsync string) (flume.Log, error) {
	return openFileLog(dir, Config{Fsync: fsync}.withDefaults(), nil)
}
