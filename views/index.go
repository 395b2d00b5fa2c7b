package views

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flume-go/flume"
)

// KeyFunc maps an entry to the keys it is indexed under: none, one or many
// (duplicates count once). It is called in seq order, from one goroutine
// while indexing and again by live queries for new entries, so it must be
// deterministic. e.Data is valid only during the call; the returned keys may
// alias it. An error stops the index (the DB reports it); return no keys
// for entries that simply do not belong in the index. Keys must be 1 to
// MaxIndexKey bytes.
type KeyFunc func(e flume.Entry) ([][]byte, error)

// MaxIndexKey is the longest key an Index accepts (bbolt's key limit less
// the escaping and seq suffix, with escaping at its worst).
const MaxIndexKey = (bolt.MaxKeySize - 10) / 2

// Index is a view that maps entries to keys in a bbolt file and answers
// queries by exact key and by key range, optionally live. Each Apply batch
// is one bbolt transaction that writes the batch's index rows and the meta
// {version, since, chain hash} together, so the file always holds an index
// consistent with its since. Create it with NewIndex and attach it with
// DB.Use.
//
// Layout: bucket "meta" holds version, since (8 bytes, big endian) and hash;
// bucket "index" holds one empty-valued row per (key, seq), keyed by
// escape(key) 0x00 0x01 seq(8 bytes, big endian), where escape turns each
// 0x00 into 0x00 0xFF. The encoding keeps bbolt's byte order equal to
// (key, seq) order and makes every key's rows one contiguous prefix.
type Index struct {
	path, version string
	keyFn         KeyFunc

	mu     sync.RWMutex // guards db, host, closed; held shared by every use of db
	db     *bolt.DB
	host   flume.ViewHost
	closed bool

	pmu   sync.Mutex // guards since and hash (read by Since without mu)
	since int64
	hash  flume.Hash
}

var (
	_ flume.ChainView    = (*Index)(nil)
	_ flume.BatchLimiter = (*Index)(nil)
)

var (
	bucketMeta  = []byte("meta")
	bucketIndex = []byte("index")
	keyVersion  = []byte("version")
	keySince    = []byte("since")
	keyHash     = []byte("hash")
)

// NewIndex returns an index view stored in the bbolt file at path. version
// names the KeyFunc's logic: when it differs from the version in the file,
// the index is rebuilt from the start of the log. The file is opened by
// DB.Use.
func NewIndex(path, version string, keyFn KeyFunc) *Index {
	return &Index{path: path, version: version, keyFn: keyFn, since: -1}
}

// Open implements flume.View: it opens (or creates) the bbolt file and reads
// the meta; a file of another version is emptied and rebuilt. A file locked
// by another process is an error after one second.
func (ix *Index) Open(host flume.ViewHost) error {
	if ix.keyFn == nil {
		return errors.New("views: index: nil KeyFunc")
	}
	if ix.path == "" {
		return errors.New("views: index: empty path")
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.host != nil {
		return errors.New("views: index: view is already open")
	}
	db, err := bolt.Open(ix.path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true})
	if err != nil {
		return fmt.Errorf("views: index: open %s: %w", ix.path, err)
	}
	var since int64 = -1
	var hash flume.Hash
	var oldVersion []byte
	err = db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m != nil {
			oldVersion = slices.Clone(m.Get(keyVersion))
		}
		if m != nil && tx.Bucket(bucketIndex) != nil && string(oldVersion) == ix.version {
			s := m.Get(keySince)
			h := m.Get(keyHash)
			if len(s) != 8 || len(h) != len(hash) {
				return fmt.Errorf("views: index: %s: bad meta (since %d bytes, hash %d bytes)", ix.path, len(s), len(h))
			}
			since = int64(binary.BigEndian.Uint64(s))
			copy(hash[:], h)
			return nil
		}
		if m != nil {
			host.Logger().Info("views: index: version changed; rebuilding", "path", ix.path, "old", string(oldVersion), "new", ix.version)
		}
		return resetTx(tx, ix.version)
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("views: index: %w", err)
	}
	ix.db, ix.host = db, host
	ix.setPos(since, hash)
	return nil
}

// resetTx empties the index and writes fresh meta, in tx.
func resetTx(tx *bolt.Tx, version string) error {
	for _, name := range [][]byte{bucketMeta, bucketIndex} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
	}
	if _, err := tx.CreateBucket(bucketIndex); err != nil {
		return err
	}
	m, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	if err := m.Put(keyVersion, []byte(version)); err != nil {
		return err
	}
	return putPos(m, -1, flume.Hash{})
}

func putPos(m *bolt.Bucket, since int64, hash flume.Hash) error {
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], uint64(since))
	if err := m.Put(keySince, s[:]); err != nil {
		return err
	}
	return m.Put(keyHash, hash[:])
}

func (ix *Index) setPos(since int64, hash flume.Hash) {
	ix.pmu.Lock()
	ix.since, ix.hash = since, hash
	ix.pmu.Unlock()
}

// MaxBatch implements flume.BatchLimiter. Each Apply is one bbolt commit
// whose cost grows with the pages it touches rather than with the rows it
// writes, so the index takes up to 64Ki entries (16 MiB) per batch.
func (ix *Index) MaxBatch() (entries, bytes int) { return 64 << 10, 16 << 20 }

// Since implements flume.View.
func (ix *Index) Since() int64 {
	ix.pmu.Lock()
	defer ix.pmu.Unlock()
	return ix.since
}

// SinceHash implements flume.ChainView.
func (ix *Index) SinceHash() flume.Hash {
	ix.pmu.Lock()
	defer ix.pmu.Unlock()
	return ix.hash
}

// Apply implements flume.View: one bbolt transaction (one commit, one
// fsync) for the whole batch's rows and the new meta.
func (ix *Index) Apply(entries []flume.Entry) error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.db == nil {
		return errors.New("views: index: not open")
	}
	// Encode and sort the batch's rows first: bbolt inserts into a node's
	// in-memory slice until commit, so unsorted puts shift that slice once
	// per row (quadratic in the batch); sorted puts land in order.
	var arena []byte
	var rows [][2]int // [start, end) of each row key in arena
	for _, e := range entries {
		keys, err := ix.keyFn(e)
		if err != nil {
			return fmt.Errorf("views: index: entry %d: %w", e.Seq, err)
		}
		for _, k := range keys {
			if len(k) == 0 || len(k) > MaxIndexKey {
				return fmt.Errorf("views: index: entry %d: key of %d bytes (want 1..%d)", e.Seq, len(k), MaxIndexKey)
			}
			start := len(arena)
			arena = appendRowKey(arena, k, e.Seq)
			rows = append(rows, [2]int{start, len(arena)})
		}
	}
	slices.SortFunc(rows, func(a, b [2]int) int { return bytes.Compare(arena[a[0]:a[1]], arena[b[0]:b[1]]) })
	last := entries[len(entries)-1]
	err := ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIndex)
		for _, r := range rows {
			if err := b.Put(arena[r[0]:r[1]:r[1]], []byte{}); err != nil {
				return fmt.Errorf("views: index: put row: %w", err)
			}
		}
		return putPos(tx.Bucket(bucketMeta), last.Seq, last.Hash)
	})
	if err != nil {
		return err
	}
	ix.setPos(last.Seq, last.Hash)
	return nil
}

// Reset implements flume.View: it empties the index in one transaction.
func (ix *Index) Reset() error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.db == nil {
		return errors.New("views: index: not open")
	}
	if err := ix.db.Update(func(tx *bolt.Tx) error { return resetTx(tx, ix.version) }); err != nil {
		return fmt.Errorf("views: index: reset: %w", err)
	}
	ix.setPos(-1, flume.Hash{})
	return nil
}

// Close implements flume.View: it closes the bbolt file. Later queries
// return ErrClosed.
func (ix *Index) Close() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.closed {
		return nil
	}
	ix.closed = true
	if ix.db == nil {
		return nil
	}
	err := ix.db.Close()
	ix.db = nil
	if err != nil {
		return fmt.Errorf("views: index: close: %w", err)
	}
	return nil
}

// appendRowKey appends escape(key) 0x00 0x01 seq to dst.
func appendRowKey(dst, key []byte, seq int64) []byte {
	dst = appendEscaped(dst, key)
	return binary.BigEndian.AppendUint64(dst, uint64(seq))
}

// appendEscaped appends escape(key) and the terminator 0x00 0x01: the prefix
// shared by exactly the rows of key, and a bound for ranges.
func appendEscaped(dst, key []byte) []byte {
	for {
		i := bytes.IndexByte(key, 0)
		if i < 0 {
			break
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, 0xFF)
		key = key[i+1:]
	}
	dst = append(dst, key...)
	return append(dst, 0x00, 0x01)
}

// decodeRowKey splits a row key into the user key and seq.
func decodeRowKey(row []byte) (key []byte, seq int64, err error) {
	if len(row) < 10 {
		return nil, 0, fmt.Errorf("views: index: row key of %d bytes", len(row))
	}
	seq = int64(binary.BigEndian.Uint64(row[len(row)-8:]))
	esc := row[:len(row)-8]
	if esc[len(esc)-2] != 0x00 || esc[len(esc)-1] != 0x01 {
		return nil, 0, errors.New("views: index: row key without terminator")
	}
	esc = esc[:len(esc)-2]
	key = make([]byte, 0, len(esc))
	for i := 0; i < len(esc); i++ {
		key = append(key, esc[i])
		if esc[i] == 0 {
			if i+1 >= len(esc) || esc[i+1] != 0xFF {
				return nil, 0, errors.New("views: index: bad escape in row key")
			}
			i++
		}
	}
	return key, seq, nil
}

// IndexQuery selects index rows. With Key set it matches exactly that key;
// otherwise it matches keys in [Gte, Lt), a nil bound being open.
type IndexQuery struct {
	Key     []byte
	Gte, Lt []byte
	// Values also reads each match's entry from the log into Match.Value.
	Values bool
	// Live continues, after the rows indexed when the query began, with
	// matches of new entries in seq order as the index applies them.
	Live bool
	// Limit stops after this many matches; 0 is no limit.
	Limit int
}

func (q *IndexQuery) contains(k []byte) bool {
	if q.Key != nil {
		return bytes.Equal(k, q.Key)
	}
	return (q.Gte == nil || bytes.Compare(k, q.Gte) >= 0) && (q.Lt == nil || bytes.Compare(k, q.Lt) < 0)
}

// Match is one index row: an entry's seq under one of its keys.
type Match struct {
	Key   []byte
	Seq   int64
	Value []byte // the entry's payload, with IndexQuery.Values
}

// queryChunk is how many rows one read transaction copies out: long read
// transactions stop bbolt from growing its file under the writer, so a slow
// reader takes short ones.
const queryChunk = 1024

// Query starts a query. It first waits until the index has applied every
// entry published when Query was called (read-your-writes, bounded by ctx).
// Existing matches come in (key, seq) order and form a snapshot at the
// index's since when the scan began; with Live, matches of later entries
// follow in seq order (keys of one entry in key order) as they are indexed.
// Memory is bounded by a chunk of rows whatever the result size. Errors are
// reported by Err once Next returns false.
func (ix *Index) Query(ctx context.Context, q IndexQuery) *IndexIter {
	it := &IndexIter{ix: ix, ctx: ctx, q: q, snapshot: -2}
	ix.mu.RLock()
	host, closed := ix.host, ix.closed
	ix.mu.RUnlock()
	switch {
	case q.Limit < 0:
		it.finish(fmt.Errorf("views: index: negative limit %d", q.Limit))
	case closed:
		it.finish(fmt.Errorf("views: index: %w", flume.ErrClosed))
	case host == nil:
		it.finish(errors.New("views: index: view is not attached to a DB (call DB.Use)"))
	default:
		if err := host.Sync(ctx); err != nil {
			it.finish(fmt.Errorf("views: index: %w", err))
		}
		it.host = host
	}
	if q.Key != nil {
		it.start = appendEscaped(nil, q.Key)
		it.end = it.start
		it.prefix = true
	} else {
		if q.Gte != nil {
			it.start = appendEscaped(nil, q.Gte)
		}
		if q.Lt != nil {
			it.end = appendEscaped(nil, q.Lt)
		}
	}
	return it
}

// Seqs returns the seqs of every entry indexed under key, in order, after
// waiting for read-your-writes.
func (ix *Index) Seqs(ctx context.Context, key []byte) ([]int64, error) {
	it := ix.Query(ctx, IndexQuery{Key: key})
	defer it.Close()
	var out []int64
	for it.Next() {
		out = append(out, it.Match().Seq)
	}
	return out, it.Err()
}

// IndexIter iterates over the matches of a query, like bufio.Scanner. It is
// used by one goroutine at a time.
type IndexIter struct {
	ix   *Index
	host flume.ViewHost
	ctx  context.Context
	q    IndexQuery

	start, end []byte // escaped bounds; end exclusive (prefix match with Key)
	prefix     bool
	snapshot   int64  // index since when the scan began (-2: not begun)
	cursor     []byte // last row returned by the scan; nil before the first
	scanned    bool   // the snapshot scan is complete
	buf        []Match
	pos        int

	stream *flume.Stream // live part
	count  int
	cur    Match
	err    error
	done   bool
}

// Next advances to the next match. It returns false at the end (never, for
// a live query, until ctx ends, the DB closes or Limit), or on error.
func (it *IndexIter) Next() bool {
	if it.done {
		return false
	}
	if it.q.Limit > 0 && it.count >= it.q.Limit {
		return it.finish(nil)
	}
	for {
		if it.pos < len(it.buf) {
			it.cur = it.buf[it.pos]
			it.buf[it.pos] = Match{}
			it.pos++
			if it.q.Values && it.cur.Value == nil {
				v, err := it.host.DB().Get(it.ctx, it.cur.Seq)
				if err != nil {
					return it.finish(fmt.Errorf("views: index: read entry %d: %w", it.cur.Seq, err))
				}
				it.cur.Value = v
			}
			it.count++
			return true
		}
		if err := it.ctx.Err(); err != nil {
			return it.finish(err)
		}
		if !it.scanned {
			if err := it.scanChunk(); err != nil {
				return it.finish(err)
			}
			continue
		}
		if !it.q.Live {
			return it.finish(nil)
		}
		if err := it.liveNext(); err != nil {
			return it.finish(err)
		}
	}
}

// scanChunk copies the next chunk of rows into buf, in a short read
// transaction.
func (it *IndexIter) scanChunk() error {
	it.ix.mu.RLock()
	defer it.ix.mu.RUnlock()
	if it.ix.closed || it.ix.db == nil {
		return fmt.Errorf("views: index: %w", flume.ErrClosed)
	}
	it.buf, it.pos = it.buf[:0], 0
	return it.ix.db.View(func(tx *bolt.Tx) error {
		if it.snapshot == -2 {
			s := tx.Bucket(bucketMeta).Get(keySince)
			if len(s) != 8 {
				return errors.New("views: index: bad meta")
			}
			it.snapshot = int64(binary.BigEndian.Uint64(s))
		}
		c := tx.Bucket(bucketIndex).Cursor()
		var k []byte
		if it.cursor == nil {
			k, _ = c.Seek(it.start)
		} else {
			k, _ = c.Seek(it.cursor)
			if bytes.Equal(k, it.cursor) {
				k, _ = c.Next()
			}
		}
		for ; k != nil; k, _ = c.Next() {
			if it.prefix && !bytes.HasPrefix(k, it.start) {
				break
			}
			if !it.prefix && it.end != nil && bytes.Compare(k, it.end) >= 0 {
				break
			}
			if len(it.buf) == queryChunk {
				return nil
			}
			key, seq, err := decodeRowKey(k)
			if err != nil {
				return err
			}
			it.cursor = append(it.cursor[:0], k...)
			if seq > it.snapshot {
				continue // indexed after the scan began: the live part has it
			}
			it.buf = append(it.buf, Match{Key: key, Seq: seq})
		}
		it.scanned = true
		return nil
	})
}

// liveNext fills buf with the matches of the next new entry.
func (it *IndexIter) liveNext() error {
	if it.stream == nil {
		it.stream = it.host.DB().Stream(it.ctx, flume.StreamOptions{Gt: flume.At(it.snapshot), Live: true})
	}
	for {
		if !it.stream.Next() {
			if err := it.stream.Err(); err != nil {
				return fmt.Errorf("views: index: live: %w", err)
			}
			return errors.New("views: index: live stream ended")
		}
		e := it.stream.Entry()
		// Emit only once the index holds the entry, so a query started
		// after this match was seen also finds it.
		if it.ix.Since() < e.Seq {
			if err := it.host.SyncTo(it.ctx, e.Seq); err != nil {
				return fmt.Errorf("views: index: %w", err)
			}
		}
		keys, err := it.ix.keyFn(e)
		if err != nil {
			return fmt.Errorf("views: index: entry %d: %w", e.Seq, err)
		}
		slices.SortFunc(keys, bytes.Compare)
		keys = slices.CompactFunc(keys, bytes.Equal)
		it.buf, it.pos = it.buf[:0], 0
		for _, k := range keys {
			if it.q.contains(k) {
				m := Match{Key: slices.Clone(k), Seq: e.Seq}
				if it.q.Values {
					m.Value = slices.Clone(e.Data)
					if m.Value == nil {
						m.Value = []byte{}
					}
				}
				it.buf = append(it.buf, m)
			}
		}
		if len(it.buf) > 0 {
			return nil
		}
	}
}

func (it *IndexIter) finish(err error) bool {
	if !it.done {
		it.done, it.err = true, err
		if it.stream != nil {
			it.stream.Close()
		}
		it.buf, it.cur = nil, Match{}
	}
	return false
}

// Match is the current match. It stays valid after Next.
func (it *IndexIter) Match() Match { return it.cur }

// Err returns the error that ended the query, nil at a normal end.
func (it *IndexIter) Err() error { return it.err }

// Close ends the query. It is safe to call more than once.
func (it *IndexIter) Close() error {
	it.finish(nil)
	return nil
}
