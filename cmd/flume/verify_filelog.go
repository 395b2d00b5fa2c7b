package main

import (
	"context"
	"errors"
)

// verifyLog walks the file log in dir. Placeholder until filelog lands.
func verifyLog(ctx context.Context, dir string, progress func(done, total int64)) (verifyResult, error) {
	return verifyResult{}, errors.New("filelog is not available yet")
}
