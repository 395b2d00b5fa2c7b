package repl

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/flume-go/flume"
)

// FuzzFollowerSession feeds arbitrary bytes, after a valid handshake, to a
// real Follower: it must never panic, the entries it already had must stay,
// and whatever it stored must be a valid continuation of its chain.
func FuzzFollowerSession(f *testing.F) {
	id := flume.LogID{9}
	base := chainEntries(id, flume.GenesisHash(id), 0, "a", "b")
	next := chainEntries(id, base[1].Hash, 2, "c", "dd", "eee")
	f.Add(batchMsg(4, next))
	f.Add(append(batchMsg(4, next[:1]), batchMsg(4, next[1:])...))
	f.Add(appendHeartbeat(batchMsg(4, next[:2]), heartbeat{Since: 4, Through: 3}))
	f.Add(appendHeartbeat(batchMsg(4, next[:2]), heartbeat{Since: 4, Through: 4})) // a lost message
	f.Add(appendError(nil, errorMsg{Code: CodeShutdown, Message: "bye"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x03, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		fdb, err := flume.Open(newMemLog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fdb.Close()
		fdb.AdoptID(id)
		fdb.SetFollower(true, "fuzz")
		if err := fdb.AppendReplicated(base); err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{}, 4)
		opts := &Options{Heartbeat: 20 * time.Millisecond, DeadAfter: 200 * time.Millisecond,
			MinBackoff: time.Hour, MaxBackoff: time.Hour}
		opts.Dial = func(ctx context.Context) (net.Conn, error) {
			c1, c2 := net.Pipe()
			go func() {
				defer func() { served <- struct{}{} }()
				defer c2.Close()
				raw := &rawPeer{t: nil, w: newWire(c2, 100*time.Millisecond)}
				if _, err := raw.primaryHandshakeNoT(Hello{LogID: id, Since: 4, Hash: next[2].Hash}); err != nil {
					return
				}
				// net.Pipe: Write returns once the follower has read it all
				// (or after the deadline if it stopped reading).
				raw.send(data)
			}()
			return c1, nil
		}
		fl, err := NewFollower(fdb, "fuzz", opts)
		if err != nil {
			t.Fatal(err)
		}
		<-served
		fl.Close()
		l := fdb.Log()
		since, _ := l.Head()
		if since < 1 {
			t.Fatalf("follower lost entries: since %d", since)
		}
		prev := flume.GenesisHash(id)
		for s := int64(0); s <= since; s++ {
			e, err := l.Entry(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := flume.CheckNext(s-1, prev, e); err != nil {
				t.Fatalf("stored entry %d breaks the chain: %v", s, err)
			}
			prev = e.Hash
		}
		for i, e := range base {
			if got, _ := l.Entry(int64(i)); got.Hash != e.Hash {
				t.Fatalf("entry %d changed", i)
			}
		}
	})
}

// FuzzPrimarySession feeds arbitrary bytes from a follower, after a valid
// handshake, to a real Primary: it never panics, never changes its log, and
// never counts a bogus ack beyond what it sent.
func FuzzPrimarySession(f *testing.F) {
	f.Add(appendAck(nil, ack{Durable: 1, Received: 1}))
	f.Add(appendAck(nil, ack{Durable: 99, Received: 99}))
	f.Add(appendHeartbeat(appendAck(nil, ack{Durable: 0, Received: 1}), heartbeat{Since: 1, Through: 1}))
	f.Add(appendHello(nil, Hello{Role: RoleFollower}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		pdb, err := flume.Open(newMemLog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pdb.Close()
		for _, v := range []string{"a", "b", "c"} {
			pdb.Append(context.Background(), []byte(v))
		}
		_, head := pdb.Log().Head()
		p, err := NewPrimary(pdb, &Options{Heartbeat: 20 * time.Millisecond, DeadAfter: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); p.ServeConn(c2) }()
		raw := &rawPeer{w: newWire(c1, 100*time.Millisecond)}
		id := pdb.Log().ID()
		if _, _, err := raw.followerHandshakeNoT(nil, Hello{NodeID: "fz", LogID: id, Since: -1, Hash: flume.GenesisHash(id)}); err != nil {
			t.Fatal(err)
		}
		go func() { // drain what the primary sends
			for {
				if _, _, err := raw.w.read(nil); err != nil {
					return
				}
			}
		}()
		raw.send(data)
		c1.Close()
		<-done
		if s, h := pdb.Log().Head(); s != 2 || h != head {
			t.Fatal("the primary's log changed")
		}
		for _, st := range p.Followers() {
			if st.AckedSeq > 2 || st.ReceivedSeq > 2 {
				t.Fatalf("primary counts an ack past its log: %+v", st)
			}
		}
	})
}
