//go:build !unix

package flumetest

func cpuTime() int64 { return -1 }
