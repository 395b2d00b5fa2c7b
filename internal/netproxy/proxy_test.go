package netproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string, seed int64) *Proxy {
	t.Helper()
	p, err := New(target, &Options{Seed: seed, ChunkSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := p.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// roundTrip writes b and reads len(b) bytes back (echo), with a deadline.
func roundTrip(c net.Conn, b []byte, timeout time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Write(b); errc <- err }()
	got := make([]byte, len(b))
	_, rerr := io.ReadFull(c, got)
	werr := <-errc
	if rerr != nil {
		return got, rerr
	}
	return got, werr
}

func TestPassesBytesUnmodified(t *testing.T) {
	p := newProxy(t, echoServer(t), 1)
	c := dial(t, p)
	want := randBytes(1, 1<<20)
	got, err := roundTrip(c, want, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes changed in transit")
	}
	st := p.Stats()
	if st.BytesUp != 1<<20 || st.BytesDown != 1<<20 {
		t.Fatalf("stats up=%d down=%d, want %d each", st.BytesUp, st.BytesDown, 1<<20)
	}
}

func TestBlackholeStopsAndHeals(t *testing.T) {
	p := newProxy(t, echoServer(t), 2)
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("hello"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("lost"))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read through blackhole: n=%d err=%v, want a timeout", n, err)
	}
	if p.Stats().BytesDropped < 4 {
		t.Fatalf("dropped %d bytes, want >= 4", p.Stats().BytesDropped)
	}
	if p.Conns() != 1 {
		t.Fatalf("blackhole closed the connection: conns=%d", p.Conns())
	}
	p.Unblackhole()
	got, err := roundTrip(c, []byte("healed"), 5*time.Second)
	if err != nil || string(got) != "healed" {
		t.Fatalf("after heal: got %q err %v, want %q", got, err, "healed")
	}
}

func TestOneWayBlackhole(t *testing.T) {
	p := newProxy(t, echoServer(t), 3)
	c := dial(t, p)
	p.BlackholeDir(Downstream)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	c.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("echo came back through a downstream blackhole")
	}
	if st := p.Stats(); st.BytesUp != 1 || st.BytesDropped != 1 {
		t.Fatalf("up=%d dropped=%d, want 1 and 1", st.BytesUp, st.BytesDropped)
	}
}

func TestCutAfterTearsMidStream(t *testing.T) {
	// A sink target that records what arrives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	p := newProxy(t, ln.Addr().String(), 4)
	p.CutAfter(1000)
	c := dial(t, p)
	data := randBytes(4, 64<<10)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(data) // may fail part-way once the proxy cuts
	b := <-got
	if len(b) != 1000 {
		t.Fatalf("target received %d bytes, want exactly 1000", len(b))
	}
	if !bytes.Equal(b, data[:1000]) {
		t.Fatal("bytes before the cut were changed")
	}
	// The client sees the connection end.
	if _, err := io.ReadAll(c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("client connection not closed by the cut")
		}
	}
	if p.Stats().Cuts != 1 {
		t.Fatalf("cuts = %d, want 1", p.Stats().Cuts)
	}
}

func TestDelayObserved(t *testing.T) {
	p := newProxy(t, echoServer(t), 5)
	c := dial(t, p)
	p.Delay(50*time.Millisecond, 10*time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// One chunk each way: at least 2*(50-10) ms.
	if el := time.Since(start); el < 80*time.Millisecond {
		t.Fatalf("round trip took %v, want >= 80ms with a 50±10ms delay each way", el)
	}
	p.Delay(0, 0)
	start = time.Now()
	if _, err := roundTrip(c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 80*time.Millisecond {
		t.Logf("undelayed round trip took %v (loaded machine?)", el)
	}
}

func TestThrottle(t *testing.T) {
	p := newProxy(t, echoServer(t), 6)
	c := dial(t, p)
	p.Throttle(100 << 10) // 100 KiB/s each way
	start := time.Now()
	if _, err := roundTrip(c, randBytes(6, 40<<10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 40 KiB at 100 KiB/s is 400ms per direction (pipelined: >= ~400ms).
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("40 KiB through a 100 KiB/s throttle took %v, want >= 300ms", el)
	}
}

func TestModifyCorrupts(t *testing.T) {
	p := newProxy(t, echoServer(t), 7)
	c := dial(t, p)
	p.ModifyDir(Upstream, func(b []byte) []byte {
		out := append([]byte(nil), b...)
		out[0] ^= 0xff
		return out
	})
	got, err := roundTrip(c, []byte("abc"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) == "abc" || got[1] != 'b' {
		t.Fatalf("got %q, want the first byte flipped", got)
	}
	p.Modify(nil)
	got, err = roundTrip(c, []byte("abc"), 5*time.Second)
	if err != nil || string(got) != "abc" {
		t.Fatalf("after Modify(nil): got %q err %v", got, err)
	}
}

func TestPauseHoldsAndResumeDelivers(t *testing.T) {
	p := newProxy(t, echoServer(t), 8)
	c := dial(t, p)
	p.Pause()
	c.Write([]byte("held"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); err == nil {
		t.Fatalf("read %d bytes while paused", n)
	}
	p.Resume()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after resume got %q err %v, want held bytes delivered", got, err)
	}
}

func TestResetConns(t *testing.T) {
	p := newProxy(t, echoServer(t), 9)
	c1, c2 := dial(t, p), dial(t, p)
	for _, c := range []net.Conn{c1, c2} {
		if _, err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.ResetConns(); n != 2 {
		t.Fatalf("reset %d conns, want 2", n)
	}
	for _, c := range []net.Conn{c1, c2} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection alive after ResetConns")
		}
	}
	// New connections still work.
	c3 := dial(t, p)
	if _, err := roundTrip(c3, []byte("y"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	target := echoServer(t)
	before := goleak.IgnoreCurrent() // the echo server's accept loop
	p, err := New(target, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cs []net.Conn
	for range 5 {
		c, err := p.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		if _, err := roundTrip(c, []byte("z"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	p.Pause() // a pump blocked in Pause must also end
	cs[0].Write([]byte("stuck"))
	p.Delay(time.Hour, 0)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range cs {
		c.Close()
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("proxy still accepting after Close")
	}
	// The proxy's goroutines and the echo server's per-connection ones are gone.
	goleak.VerifyNone(t, before)
}
