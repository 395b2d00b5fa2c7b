package repl

import (
	"sort"
	"sync"
	"time"
)

// trackLag records when each new since was published, for LagSeconds. It
// exits when the Primary closes or the DB closes.
func (p *Primary) trackLag(ch <-chan struct{}) {
	defer p.wg.Done()
	for {
		select {
		case <-ch:
		case <-p.ctx.Done():
			return
		}
		var since int64
		since, ch = p.db.Changed()
		p.lag.record(since, time.Now())
		// At most one record per millisecond: lag in seconds needs no
		// finer grain, and a wake-up per append would cost the writers.
		t := time.NewTimer(time.Millisecond)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return
		}
	}
}

// Followers returns the status of every follower seen recently, connected
// or not, sorted by node ID.
func (p *Primary) Followers() []FollowerStatus {
	since := p.db.Since()
	now := time.Now()
	p.mu.Lock()
	list := make([]FollowerStatus, 0, len(p.mu.followers))
	type sess struct {
		i int
		s *sendSession
	}
	var live []sess
	for _, fs := range p.mu.followers {
		st := FollowerStatus{
			NodeID: fs.nodeID, Addr: fs.addr, Connected: fs.session != nil,
			AckedSeq: fs.acked, ReceivedSeq: fs.received, LagEntries: max(0, since-fs.acked),
			ConnectedAt: fs.connectedAt, LastSeen: fs.lastSeen, EntriesPerSec: fs.rate,
		}
		if dt := now.Sub(fs.rateT0); dt >= time.Second {
			st.EntriesPerSec = float64(fs.acked-fs.rateSeq0) / dt.Seconds()
		}
		if fs.session != nil {
			live = append(live, sess{len(list), fs.session})
		}
		list = append(list, st)
	}
	p.mu.Unlock()
	for _, ls := range live {
		st := &list[ls.i]
		s := ls.s
		s.mu.Lock()
		unacked := s.mu.sentBytes - s.mu.durBytes
		if unsent := since - s.mu.sentSeq; unsent > 0 && s.mu.sentCount > 0 {
			unacked += unsent * (s.mu.sentBytes / s.mu.sentCount)
		}
		s.mu.Unlock()
		st.LagBytes = unacked
	}
	for i := range list {
		if list[i].LagEntries > 0 {
			if t, ok := p.lag.publishedAt(list[i].AckedSeq + 1); ok {
				list[i].LagSeconds = now.Sub(t).Seconds()
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].NodeID < list[j].NodeID })
	return list
}

// lagRing remembers when each since was published, for LagSeconds: a
// bounded ring of (since, time) pairs in increasing since order. When full
// the oldest pairs are dropped, so ages beyond its reach are underestimated.
type lagRing struct {
	mu    sync.Mutex
	recs  []lagRec
	start int // index of the oldest
	n     int
}

type lagRec struct {
	since int64
	at    time.Time
}

func (r *lagRing) init(size int) { r.recs = make([]lagRec, size) }

func (r *lagRing) record(since int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.recs[(r.start+r.n-1)%len(r.recs)].since >= since {
		return
	}
	if r.n == len(r.recs) {
		r.start = (r.start + 1) % len(r.recs)
		r.n--
	}
	r.recs[(r.start+r.n)%len(r.recs)] = lagRec{since, at}
	r.n++
}

// publishedAt returns when seq was first published (the time of the first
// record with since >= seq), or the oldest known time if seq is older.
func (r *lagRing) publishedAt(seq int64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return time.Time{}, false
	}
	i := sort.Search(r.n, func(i int) bool { return r.recs[(r.start+i)%len(r.recs)].since >= seq })
	if i == r.n {
		return time.Time{}, false
	}
	return r.recs[(r.start+i)%len(r.recs)].at, true
}

// learnedAt is when the follower learned that the primary holds seq.
type learnedAt struct {
	seq int64
	at  time.Time
}

const maxLearned = 4096

// notePrimarySinceLocked records the primary's since as reported by a
// handshake, an Entries message or a heartbeat. f.mu is held.
func (f *Follower) notePrimarySinceLocked(ps int64, now time.Time) {
	switch {
	case ps < f.mu.primarySince:
		// Another primary, or one that restarted with less: start over.
		f.mu.primarySince, f.mu.learned = ps, append(f.mu.learned[:0], learnedAt{ps, now})
	case ps > f.mu.primarySince:
		f.mu.primarySince = ps
		if n := len(f.mu.learned); n >= maxLearned {
			f.mu.learned[n-1].seq = ps
		} else {
			f.mu.learned = append(f.mu.learned, learnedAt{ps, now})
		}
	}
}

// Status returns the follower's view of its upstream.
func (f *Follower) Status() UpstreamStatus {
	since := f.db.Since()
	f.mu.Lock()
	defer f.mu.Unlock()
	st := UpstreamStatus{
		Primary: f.addr, State: f.mu.state, Connected: f.mu.connected, Since: since,
		PrimarySince: f.mu.primarySince, Reconnects: f.stats.reconnects.Load(), ConnectedAt: f.mu.connectedAt, PrimaryHTTP: f.mu.primaryHTTP,
	}
	if f.mu.primarySince >= 0 {
		st.LagEntries = max(0, f.mu.primarySince-since)
	}
	if n := f.stats.entriesReceived.Load(); n > 0 && st.LagEntries > 0 {
		st.LagBytes = st.LagEntries * (f.stats.bytesReceived.Load() / n)
	}
	// Drop what this follower now holds; the first point left is the
	// oldest news of an entry it does not hold.
	i := 0
	for i < len(f.mu.learned) && f.mu.learned[i].seq <= since {
		i++
	}
	f.mu.learned = f.mu.learned[i:]
	if len(f.mu.learned) > 0 {
		st.LagSeconds = time.Since(f.mu.learned[0].at).Seconds()
	}
	if f.mu.lastErr != nil {
		st.LastError = f.mu.lastErr.Error()
	}
	return st
}
