package repl

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/vfs"
	"pgregory.net/rapid"
)

// failoverModel is three nodes over memlog and in-process links: one
// primary, two followers, and manual failovers (promote the longest
// follower, repoint the other, rejoin the old primary by a verified cut).
type failoverModel struct {
	t       *rapid.T
	nodes   []*flume.DB
	fs      []*vfs.MemFS // each node's fork directory lives here
	primary int
	links   map[int]*Link    // follower index → its link from the primary
	acked   map[int64]string // seq → value of every append acknowledged at k=1
	seen    map[int]uint64   // per node, the highest fenced epoch seen
	n       int
}

func (m *failoverModel) opts(i int) *Options {
	o := fastOpts()
	o.NodeID = fmt.Sprintf("n%d", i)
	o.ForkDir, o.FS = "/forked", m.fs[i]
	return o
}

func (m *failoverModel) follow(i int) {
	l, err := Replicate(m.nodes[m.primary], m.nodes[i], m.opts(i))
	if err != nil {
		m.t.Fatalf("node %d following node %d: %v", i, m.primary, err)
	}
	m.links[i] = l
}

func (m *failoverModel) append(k int) {
	p := m.nodes[m.primary]
	m.n++
	v := fmt.Sprintf(`"v%d"`, m.n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	seq, _, err := p.AppendWith(ctx, flume.AppendOptions{SyncReplicas: k}, []byte(v))
	if err == nil && k == 1 {
		m.acked[seq] = v
	}
	if err != nil && k == 0 {
		m.t.Fatalf("async append on the primary: %v", err)
	}
}

// failover promotes the follower with the longest log, repoints the other
// follower to it and makes the old primary rejoin it.
func (m *failoverModel) failover() {
	best := -1
	for i := range m.nodes {
		if i != m.primary && (best < 0 || m.nodes[i].Since() > m.nodes[best].Since()) {
			best = i
		}
	}
	if m.nodes[best].Since() < 0 && m.nodes[m.primary].Since() >= 0 {
		// Nothing would be provably common with the old primary: its
		// rejoin is refused by design (a rejoin never cuts a whole log;
		// TestCutPoint covers it), which needs an operator, not a model.
		return
	}
	old := m.primary
	oldLog := m.nodes[old].Log()
	oldSince := oldLog.Since()
	rec, err := m.links[best].Follower().Promote()
	if err != nil {
		m.t.Fatalf("promote node %d: %v", best, err)
	}
	for _, l := range m.links {
		l.Close()
	}
	m.links = map[int]*Link{}
	// What the old primary holds past the new epoch's start is what its
	// rejoin must cut, and keep.
	var wantCut []string
	for s := rec.Start; s <= oldSince; s++ {
		e, err := oldLog.Entry(s)
		if err != nil {
			m.t.Fatal(err)
		}
		wantCut = append(wantCut, fmt.Sprintf("%d:%s", s, e.Data))
	}
	before := forked(m.t, m.fs[old])
	m.primary = best
	for i := range m.nodes {
		if i != best {
			m.follow(i)
		}
	}
	m.converge()
	got := forked(m.t, m.fs[old])[len(before):]
	if fmt.Sprint(got) != fmt.Sprint(wantCut) {
		m.t.Fatalf("node %d's rejoin kept %v in forked/, want exactly %v", old, got, wantCut)
	}
}

func forked(t *rapid.T, fsys *vfs.MemFS) []string {
	var out []string
	err := fork.Entries(fsys, "/forked", func(_ fork.Info, e flume.Entry) error {
		out = append(out, fmt.Sprintf("%d:%s", e.Seq, e.Data))
		return nil
	})
	if _, serr := fsys.Stat("/forked"); err != nil && serr == nil {
		t.Fatal(err)
	}
	return out
}

// converge waits until every follower holds the primary's log.
func (m *failoverModel) converge() {
	p := m.nodes[m.primary]
	for i, db := range m.nodes {
		if i == m.primary {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := db.WaitSince(ctx, p.Since())
		cancel()
		if err != nil {
			st := m.links[i].Follower().Status()
			m.t.Fatalf("node %d at %d, primary (node %d) at %d: %v; follower %s: %s", i, db.Since(), m.primary, p.Since(), err, st.State, st.LastError)
		}
	}
}

// check is every invariant after every step.
func (m *failoverModel) check() {
	p := m.nodes[m.primary]
	pl := p.Log()
	// Every entry acknowledged at k=1 is on the current primary, as it was.
	for seq, v := range m.acked {
		b, err := pl.Get(seq)
		if err != nil || string(b) != v {
			m.t.Fatalf("acknowledged entry %d (%s) is %q, %v on the primary", seq, v, b, err)
		}
	}
	for i, db := range m.nodes {
		l := db.Log()
		// Prefix: a follower's log is a prefix of its primary's.
		if i != m.primary {
			since, hash := l.Head()
			if since > pl.Since() {
				m.t.Fatalf("node %d is ahead of its primary (%d > %d)", i, since, pl.Since())
			}
			if since >= 0 {
				if e, err := pl.Entry(since); err != nil || e.Hash != hash {
					m.t.Fatalf("node %d is not a prefix of the primary at %d", i, since)
				}
			}
		}
		// Epochs strictly increase along every history.
		h := l.(flume.EpochLog).Epochs()
		for j := 1; j < len(h); j++ {
			if h[j].Epoch <= h[j-1].Epoch {
				m.t.Fatalf("node %d's epochs do not increase: %v", i, h)
			}
		}
		// The fence never goes back: a node never again follows a primary
		// older than one it has followed. (The newest record may: a
		// promotion that wrote nothing is dropped when the node rejoins a
		// history without it.)
		if fe := l.(flume.EpochLog).FencedEpoch(); fe < m.seen[i] {
			m.t.Fatalf("node %d's fenced epoch went back from %d to %d", i, m.seen[i], fe)
		} else {
			m.seen[i] = fe
		}
	}
}

// TestFailoverModel: random appends (k=0 and k=1) and manual failovers
// over three nodes; after every step, every acknowledged k=1 entry is on
// the current primary, followers are prefixes, epochs only grow, and a
// rejoin keeps in forked/ exactly what it cut.
func TestFailoverModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := &failoverModel{t: t, links: map[int]*Link{}, acked: map[int64]string{}, seen: map[int]uint64{}}
		for i := 0; i < 3; i++ {
			db, err := flume.Open(memlog.New(), &flume.Options{SyncTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			m.nodes = append(m.nodes, db)
			m.fs = append(m.fs, vfs.NewMem())
		}
		defer func() {
			for _, l := range m.links {
				l.Close()
			}
			for _, db := range m.nodes {
				db.Close()
			}
		}()
		m.follow(1)
		m.follow(2)
		t.Repeat(map[string]func(*rapid.T){
			"append async": func(t *rapid.T) { m.append(0) },
			"append sync":  func(t *rapid.T) { m.append(1) },
			"burst async": func(t *rapid.T) {
				for i := rapid.IntRange(1, 20).Draw(t, "n"); i > 0; i-- {
					m.append(0)
				}
			},
			"failover": func(t *rapid.T) { m.failover() },
			"":         func(t *rapid.T) { m.check() },
		})
	})
}
