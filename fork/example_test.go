package fork_test

import (
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/vfs"
)

// A cut of the last two entries of a log saved with the Writer, then read
// back. The frames written are what TruncateAfter streams; here they are
// encoded from the log's entries.
func Example() {
	l := memlog.New()
	l.Append([]byte(`{"n":0}`), []byte(`{"n":1}`), []byte(`{"n":2}`))
	since, head := l.Head()
	kept, _ := l.Entry(0)

	fsys := vfs.NewMem()
	w, err := fork.Create(fsys, "data/forked", fork.Header{
		LogID: l.ID(), After: 0, AfterHash: kept.Hash, Since: since, SinceHash: head,
		Reason: "rejoin: the new primary lacks seqs 1..2",
	})
	if err != nil {
		panic(err)
	}
	var stream []byte
	for seq := int64(1); seq <= since; seq++ {
		e, _ := l.Entry(seq)
		stream = frame.Append(stream, e)
	}
	w.Write(stream) // the Write that completes seq 2 seals the file
	fmt.Println("commit:", w.Commit())

	fork.Entries(fsys, "data/forked", func(i fork.Info, e flume.Entry) error {
		fmt.Printf("seq %d: %s (%s)\n", e.Seq, e.Data, i.Header.Reason)
		return nil
	})
	// Output:
	// commit: <nil>
	// seq 1: {"n":1} (rejoin: the new primary lacks seqs 1..2)
	// seq 2: {"n":2} (rejoin: the new primary lacks seqs 1..2)
}
