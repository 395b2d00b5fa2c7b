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
