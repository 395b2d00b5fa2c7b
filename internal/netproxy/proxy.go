// Package netproxy is an in-process, seedable, fault-injecting TCP proxy for
// tests, modelled on etcd's pkg/proxy but keeping only what flume's tests use.
//
// A Proxy listens on 127.0.0.1:0 and forwards every accepted connection to a
// target address. While traffic flows, a test can:
//
//	Blackhole / Unblackhole   drop the bytes in both directions (a partition);
//	                          connections stay open, so only heartbeats notice
//	Pause / Resume            hold the bytes (nothing is dropped) until Resume
//	Delay(d, jitter)          hold each chunk for d ± jitter before forwarding
//	Throttle(bytesPerSec)     limit each direction of each connection
//	CutAfter(n)               close each connection after n more bytes, in the
//	                          middle of whatever frame they belong to
//	Modify(fn)                rewrite each chunk (corruption)
//	ResetConns                close every current connection at once
//
// Every fault applies to the connections open when it is set and to those
// accepted later, until it is cleared. Jitter comes from a math/rand source
// seeded by Options.Seed, so a schedule is replayable (the interleaving with
// the kernel's scheduling is not, of course).
//
// Goroutines: one accept loop per Proxy and two pumps per connection. Close
// stops all of them and returns once they have exited.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction selects one way of a proxied connection.
type Direction int

const (
	// Upstream is client → target (e.g. follower → primary).
	Upstream Direction = 1 << iota
	// Downstream is target → client (e.g. primary → follower).
	Downstream
	// Both is Upstream|Downstream.
	Both = Upstream | Downstream
)

func (d Direction) String() string {
	switch d {
	case Upstream:
		return "upstream"
	case Downstream:
		return "downstream"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Options configure a Proxy; nil means defaults.
type Options struct {
	// Seed seeds the jitter source. 0 is a valid seed.
	Seed int64
	// ChunkSize is the largest piece read and forwarded at once. Smaller
	// chunks make Throttle smoother and CutAfter/Modify finer. Default 16 KiB.
	ChunkSize int
	// DialTimeout bounds the dial to the target. Default 2s.
	DialTimeout time.Duration
}

// Stats are cumulative counters of a Proxy.
type Stats struct {
	Accepted      int64 // connections accepted
	DialFailures  int64 // accepted connections whose target dial failed
	BytesUp       int64 // bytes forwarded client → target
	BytesDown     int64 // bytes forwarded target → client
	BytesDropped  int64 // bytes dropped by Blackhole
	Cuts          int64 // connections closed by CutAfter
	Resets        int64 // connections closed by ResetConns
	Modifications int64 // chunks passed through a Modify function
}

// Proxy is a fault-injecting TCP proxy. Create it with New; all methods are
// safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and pumps

	mu struct {
		sync.Mutex
		blackhole Direction
		paused    bool
		resumed   chan struct{} // closed and replaced by Resume
		delay     time.Duration
		jitter    time.Duration
		bps       int64 // 0: unlimited
		cutAfter  int64 // bytes per connection after which it is cut; 0: off
		cutGen    int64 // bumped by each CutAfter so counts restart
		modify    func([]byte) []byte
		modDir    Direction
		rnd       *rand.Rand
		conns     map[*link]struct{}
		closed    bool
	}

	stats struct {
		accepted, dialFailures, up, down, dropped, cuts, resets, mods atomic.Int64
	}
	closeOnce sync.Once
}

// New starts a proxy on 127.0.0.1:0 that forwards to target.
func New(target string, opts *Options) (*Proxy, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 16 << 10
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, opts: o}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.resumed = make(chan struct{})
	p.mu.rnd = rand.New(rand.NewSource(o.Seed))
	p.mu.conns = make(map[*link]struct{})
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Dial connects to the proxy; it fits repl.Options.Dial.
func (p *Proxy) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", p.Addr())
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted: p.stats.accepted.Load(), DialFailures: p.stats.dialFailures.Load(),
		BytesUp: p.stats.up.Load(), BytesDown: p.stats.down.Load(), BytesDropped: p.stats.dropped.Load(),
		Cuts: p.stats.cuts.Load(), Resets: p.stats.resets.Load(), Modifications: p.stats.mods.Load(),
	}
}

// Conns is the number of connections currently proxied.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.conns)
}

// Blackhole drops all traffic in both directions; connections stay open and
// new ones are accepted (and then hear nothing). Unblackhole heals.
//
// Bytes dropped from the middle of a connection leave a stream with a hole,
// which no real TCP connection ever delivers (TCP retransmits, or the
// connection dies). To model the end of a real partition, follow
// Unblackhole with ResetConns; keep the connections only to test what a
// receiver does with a stream that lost whole messages.
func (p *Proxy) Blackhole() { p.BlackholeDir(Both) }

// BlackholeDir drops traffic in the given directions only (a one-way
// partition, e.g. Upstream loses a follower's acks while entries still flow).
func (p *Proxy) BlackholeDir(d Direction) {
	p.mu.Lock()
	p.mu.blackhole = d
	p.mu.Unlock()
}

// Unblackhole lets traffic through again. Bytes dropped meanwhile are gone.
func (p *Proxy) Unblackhole() { p.BlackholeDir(0) }

// Pause holds traffic in both directions without dropping it; Resume
// forwards what was held. Connections stay open.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.mu.paused = true
	p.mu.Unlock()
}

// Resume ends a Pause.
func (p *Proxy) Resume() {
	p.mu.Lock()
	if p.mu.paused {
		p.mu.paused = false
		close(p.mu.resumed)
		p.mu.resumed = make(chan struct{})
	}
	p.mu.Unlock()
}

// Delay holds every chunk for d plus a uniform random amount in
// [-jitter, +jitter] (never below zero) before forwarding it. Delay(0, 0)
// clears it.
func (p *Proxy) Delay(d, jitter time.Duration) {
	p.mu.Lock()
	p.mu.delay, p.mu.jitter = d, jitter
	p.mu.Unlock()
}

// Throttle limits each direction of each connection to bytesPerSec.
// Throttle(0) clears it.
func (p *Proxy) Throttle(bytesPerSec int64) {
	p.mu.Lock()
	p.mu.bps = max(bytesPerSec, 0)
	p.mu.Unlock()
}

// CutAfter closes each connection (current and future) once it has forwarded
// n more bytes, counted over both directions from this call or from the
// connection's start, whichever is later. The n-th byte is the last one
// forwarded: the rest of its chunk is dropped, so the peer sees a frame torn
// in the middle. CutAfter(0) clears it.
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	p.mu.cutAfter = max(n, 0)
	p.mu.cutGen++
	p.mu.Unlock()
}

// Modify passes every chunk through fn before forwarding it, in both
// directions. fn may return a slice of another length (or nil to drop the
// chunk); it must not keep its argument. Modify(nil) clears it.
func (p *Proxy) Modify(fn func([]byte) []byte) { p.ModifyDir(Both, fn) }

// ModifyDir is Modify for the given directions only.
func (p *Proxy) ModifyDir(d Direction, fn func([]byte) []byte) {
	p.mu.Lock()
	p.mu.modify, p.mu.modDir = fn, d
	p.mu.Unlock()
}

// Heal clears every fault: Unblackhole, Resume, Delay(0,0), Throttle(0),
// CutAfter(0), Modify(nil).
func (p *Proxy) Heal() {
	p.Unblackhole()
	p.Resume()
	p.Delay(0, 0)
	p.Throttle(0)
	p.CutAfter(0)
	p.Modify(nil)
}

// ResetConns closes every connection open now (both sides see the close);
// the proxy keeps accepting new ones. It returns how many it closed.
func (p *Proxy) ResetConns() int {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.mu.conns))
	for l := range p.mu.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
	p.stats.resets.Add(int64(len(ls)))
	return len(ls)
}

// Close stops accepting, closes every connection and waits for every
// goroutine of the proxy to exit. Later calls return nil.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.mu.closed = true
		ls := make([]*link, 0, len(p.mu.conns))
		for l := range p.mu.conns {
			ls = append(ls, l)
		}
		p.mu.Unlock()
		p.cancel()
		err = p.ln.Close()
		for _, l := range ls {
			l.close()
		}
		p.wg.Wait()
	})
	return err
}

// acceptLoop runs until the listener is closed by Close.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	var tempDelay time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (EMFILE, ...): back off as net/http does.
			tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(tempDelay):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		tempDelay = 0
		p.stats.accepted.Add(1)
		p.wg.Add(1)
		go p.handle(c)
	}
}

// link is one proxied connection: the accepted client side and the dialled
// target side.
type link struct {
	client, server net.Conn
	done           chan struct{} // closed by close
	once           sync.Once

	mu       sync.Mutex
	cutGen   int64 // generation of the CutAfter setting counted below
	cutCount int64 // bytes forwarded since that setting
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		if l.server != nil {
			l.server.Close()
		}
	})
}

// handle dials the target for an accepted connection and runs its two pumps.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.DialTimeout)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		p.stats.dialFailures.Add(1)
		client.Close()
		return
	}
	l := &link{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.mu.conns[l] = struct{}{}
	l.cutGen = p.mu.cutGen
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, client, server, Upstream) }()
	go func() { defer wg.Done(); p.pump(l, server, client, Downstream) }()
	wg.Wait()
	l.close()
	p.mu.Lock()
	delete(p.mu.conns, l)
	p.mu.Unlock()
}

// pump copies src to dst applying the faults, until either side fails or the
// link is closed. Any end of a pump closes the whole link: a half-closed TCP
// connection is not a case flume's protocol uses.
func (p *Proxy) pump(l *link, src, dst net.Conn, dir Direction) {
	defer l.close()
	buf := make([]byte, p.opts.ChunkSize)
	for {
		n, err := src.Read(buf[:p.chunkLen()])
		if n > 0 {
			if !p.forward(l, dst, buf[:n], dir) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// chunkLen is the read size: smaller under Throttle so that the rate is
// smooth (about 20 chunks a second).
func (p *Proxy) chunkLen() int {
	p.mu.Lock()
	bps := p.mu.bps
	p.mu.Unlock()
	n := p.opts.ChunkSize
	if bps > 0 {
		n = int(min(int64(n), max(bps/20, 1)))
	}
	return n
}

// forward applies the faults to one chunk and writes it. It returns false
// when the link must end.
func (p *Proxy) forward(l *link, dst net.Conn, b []byte, dir Direction) bool {
	// Pause: hold until Resume, Close or the link closing.
	for {
		p.mu.Lock()
		paused, resumed := p.mu.paused, p.mu.resumed
		p.mu.Unlock()
		if !paused {
			break
		}
		select {
		case <-resumed:
		case <-l.done:
			return false
		case <-p.ctx.Done():
			return false
		}
	}

	p.mu.Lock()
	blackhole := p.mu.blackhole&dir != 0
	delay := p.mu.delay
	if j := p.mu.jitter; j > 0 {
		delay += time.Duration(p.mu.rnd.Int63n(int64(2*j)+1)) - j
	}
	bps := p.mu.bps
	cutAfter, cutGen := p.mu.cutAfter, p.mu.cutGen
	modify := p.mu.modify
	if p.mu.modDir&dir == 0 {
		modify = nil
	}
	p.mu.Unlock()

	if blackhole {
		p.stats.dropped.Add(int64(len(b)))
		return true
	}
	if delay > 0 && !p.sleep(l, delay) {
		return false
	}
	if modify != nil {
		p.stats.mods.Add(1)
		b = modify(b)
	}

	cut := false
	if cutAfter > 0 {
		l.mu.Lock()
		if l.cutGen != cutGen {
			l.cutGen, l.cutCount = cutGen, 0
		}
		if rest := cutAfter - l.cutCount; int64(len(b)) >= rest {
			b, cut = b[:max(rest, 0)], true
		}
		l.cutCount += int64(len(b))
		l.mu.Unlock()
	}

	if len(b) > 0 {
		// Count before writing: the peer may read the bytes and look at
		// Stats before this goroutine runs again. A failed write takes
		// back what it did not deliver.
		ctr := &p.stats.down
		if dir == Upstream {
			ctr = &p.stats.up
		}
		ctr.Add(int64(len(b)))
		if n, err := writeFull(dst, b); err != nil {
			ctr.Add(-int64(len(b) - n))
			return false
		}
	}
	if cut {
		p.stats.cuts.Add(1)
		l.close()
		return false
	}
	if bps > 0 && len(b) > 0 {
		if !p.sleep(l, time.Duration(int64(len(b))*int64(time.Second)/bps)) {
			return false
		}
	}
	return true
}

// sleep waits d unless the link or the proxy closes first.
func (p *Proxy) sleep(l *link, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	case <-p.ctx.Done():
		return false
	}
}

func writeFull(w io.Writer, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := w.Write(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
