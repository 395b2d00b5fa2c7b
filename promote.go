package flume

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrNotFollower is returned by DB.Promote on a DB that is not a follower:
// it already takes appends (a primary), so there is nothing to promote.
var ErrNotFollower = errors.New("flume: not a follower")

// ErrNoEpochs is returned by DB.Promote when the DB's log keeps no epoch
// history (it does not implement EpochLog), so a promotion could not be
// told apart from the history before it.
var ErrNoEpochs = errors.New("flume: the log keeps no epoch history")

// Promote makes a follower DB the primary of a new epoch, atomically with
// respect to appends: no client append is taken before the epoch's record
// is durable, and no replicated append is taken after. The new epoch is one
// higher than any the log has seen (its own epoch, its last epoch record,
// and the epoch it is fenced at); the log is fenced at it and the record
// (first seq Since()+1, chain hash at Since(), a random promotion ID) is made
// durable before Promote returns. From then on client appends succeed,
// AppendReplicated is refused, and any upstream claim is over: the caller
// must have stopped its replication follower first (repl.Follower.Promote
// does both).
//
// nodeID names the promoter in the record (informative). Promote fails with
// ErrNotFollower on a DB that takes appends, ErrNoEpochs if the log keeps
// no epoch history, and ErrClosed after Close; then nothing changes.
func (db *DB) Promote(nodeID string) (EpochRecord, error) {
	el, ok := db.log.(EpochLog)
	if !ok {
		return EpochRecord{}, ErrNoEpochs
	}
	if err := db.lockAsFollower(); err != nil {
		return EpochRecord{}, err
	}
	defer db.appendMu.Unlock()
	r, err := beginEpoch(el, nodeID)
	if err != nil {
		return EpochRecord{}, fmt.Errorf("flume: promote: %w", err)
	}
	db.mu.Lock()
	db.mu.follower, db.mu.primary, db.mu.upstream, db.mu.deposed = false, "", false, nil
	db.endHoldLocked() // what it held is the new epoch's history now
	db.mu.ownEpoch = true
	db.mu.Unlock()
	return r, nil
}

// Depose records that a newer primary exists (of epoch, at primary, each
// if known): from then on client appends fail with a *DeposedError, so a
// primary that learned it was replaced acknowledges nothing more. The
// replication side fails its waiting synchronous appends too. It persists
// nothing: after a restart the node learns it again from the first peer
// that refuses it, and the durable fence of those peers is what stops it.
// Promote clears it; a deposed node normally follows the new primary next.
func (db *DB) Depose(epoch uint64, primary string) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if d := db.mu.deposed; d != nil && d.Epoch >= epoch && (primary == "" || d.Primary == primary) {
		return
	}
	db.mu.deposed = &DeposedError{Epoch: epoch, Primary: primary}
}

// Deposed returns the DeposedError set by Depose, or nil.
func (db *DB) Deposed() *DeposedError {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.deposed
}

// AdoptEpoch makes a follower's log begin epoch r, replicated from its
// primary: r.Start must be the log's Since()+1 (the caller appends r's
// entries next), r.Prev its head hash. It is how every replica ends up with
// the same epoch history. A record the log already holds is a no-op. Only a
// follower adopts (ErrNotFollower), and only a log that keeps epochs
// (ErrNoEpochs).
func (db *DB) AdoptEpoch(r EpochRecord) error {
	el, ok := db.log.(EpochLog)
	if !ok {
		return ErrNoEpochs
	}
	if err := db.lockAsFollower(); err != nil {
		return err
	}
	defer db.appendMu.Unlock()
	for _, h := range el.Epochs() {
		if h.Same(r) {
			return nil
		}
	}
	if err := el.BeginEpoch(r); err != nil {
		return fmt.Errorf("flume: adopt %s: %w", r, err)
	}
	db.mu.Lock()
	db.mu.ownEpoch = false
	db.mu.Unlock()
	return nil
}

// DropEmptyEpochs drops a follower's epoch records after the first keep,
// which name promotions that never wrote an entry and that its new
// primary's history does not have (EpochLog.DropEmptyEpochs), so that it
// can adopt the primary's records from there. Only a follower does it.
func (db *DB) DropEmptyEpochs(keep int) error {
	el, ok := db.log.(EpochLog)
	if !ok {
		return ErrNoEpochs
	}
	if err := db.lockAsFollower(); err != nil {
		return err
	}
	defer db.appendMu.Unlock()
	return el.DropEmptyEpochs(keep)
}

// lockAsFollower takes appendMu exclusively, so that no append interleaves,
// and checks that the DB is open (ErrClosed) and a follower
// (ErrNotFollower): the role every change of a replica's history below the
// application (promotion, adopted epochs, verified cuts) requires. On
// success the caller holds appendMu and unlocks it.
func (db *DB) lockAsFollower() error {
	db.appendMu.Lock()
	db.mu.Lock()
	closed, follower := db.mu.closed, db.mu.follower
	db.mu.Unlock()
	switch {
	case closed:
		db.appendMu.Unlock()
		return ErrClosed
	case !follower:
		db.appendMu.Unlock()
		return ErrNotFollower
	}
	return nil
}

// beginEpoch fences el at, and begins, an epoch one higher than any el has
// seen (its own epoch, its last record's, its fenced epoch), starting at
// Since()+1. appendMu is held exclusively.
func beginEpoch(el EpochLog, nodeID string) (EpochRecord, error) {
	epoch := max(el.Epoch(), el.FencedEpoch())
	if h := el.Epochs(); len(h) > 0 {
		epoch = max(epoch, h[len(h)-1].Epoch)
	}
	epoch++
	since, hash := el.Head()
	r := EpochRecord{Epoch: epoch, Start: since + 1, Prev: hash, When: time.Now().UnixNano()}
	if _, err := rand.Read(r.Promotion[:]); err != nil {
		return EpochRecord{}, err
	}
	sum := sha256.Sum256([]byte(nodeID))
	r.Promoter = binary.LittleEndian.Uint32(sum[:4])
	// Fenced first: a crash between the two leaves a node that refuses the
	// old primary and has not begun the epoch, which a retried Promote
	// finishes (at a higher number, as the fence counts as seen).
	if err := el.Fence(epoch); err != nil {
		return EpochRecord{}, fmt.Errorf("fence at epoch %d: %w", epoch, err)
	}
	if err := el.BeginEpoch(r); err != nil {
		return EpochRecord{}, fmt.Errorf("begin epoch %d: %w", epoch, err)
	}
	return r, nil
}

// NewEpoch begins a new epoch on a primary DB (one that takes client
// appends), as Promote does on a follower: one higher than any the log has
// seen, durable before NewEpoch returns and before any entry of the epoch.
// Replication calls it when a primary that sends entries before its own
// fsync starts serving (repl.NewPrimary): entries a follower received from
// an earlier run of the primary and the primary then lost in a power
// failure lie in the previous epoch, so a rejoin cuts them at the exact
// seq where this run's history begins, as Kafka's leader epoch does on every
// election. It fails with ErrHasUpstream on a follower, the *DeposedError
// on a deposed primary, ErrNoEpochs if the log keeps no epoch history and
// ErrClosed after Close; then nothing changes.
func (db *DB) NewEpoch(nodeID string) (EpochRecord, error) {
	el, ok := db.log.(EpochLog)
	if !ok {
		return EpochRecord{}, ErrNoEpochs
	}
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	db.mu.Lock()
	closed, follower, deposed := db.mu.closed, db.mu.follower, db.mu.deposed
	db.mu.Unlock()
	switch {
	case closed:
		return EpochRecord{}, ErrClosed
	case follower:
		return EpochRecord{}, ErrHasUpstream
	case deposed != nil:
		return EpochRecord{}, deposed
	}
	r, err := beginEpoch(el, nodeID)
	if err != nil {
		return EpochRecord{}, fmt.Errorf("flume: new epoch: %w", err)
	}
	db.mu.Lock()
	db.mu.ownEpoch = true
	db.mu.Unlock()
	return r, nil
}

// OwnEpoch reports whether the log's current epoch was begun by this DB
// since it was opened (Promote or NewEpoch), so that every entry of that
// epoch was written by this process. A DB that adopts a primary's epoch
// (AdoptEpoch) no longer owns its current one.
func (db *DB) OwnEpoch() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.ownEpoch
}
