package memlog_test

import (
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/memlog"
)

func open(t *testing.T) flume.Log { return memlog.New() }

func TestConformance(t *testing.T) { flumetest.TestLog(t, open) }

func benchOpen(b *testing.B) flume.Log { return memlog.New() }

func BenchmarkAppend100B(b *testing.B)      { flumetest.BenchAppend(b, benchOpen, 100, 1, 1) }
func BenchmarkAppend100BBatch(b *testing.B) { flumetest.BenchAppend(b, benchOpen, 100, 1, 1000) }
func BenchmarkAppend100B64W(b *testing.B)   { flumetest.BenchAppend(b, benchOpen, 100, 64, 1) }
func BenchmarkAppend1KiBBatch(b *testing.B) { flumetest.BenchAppend(b, benchOpen, 1024, 1, 1000) }
func BenchmarkIter100B(b *testing.B)        { flumetest.BenchIter(b, benchOpen, 100) }
func BenchmarkGet100B(b *testing.B)         { flumetest.BenchGet(b, benchOpen, 100) }
