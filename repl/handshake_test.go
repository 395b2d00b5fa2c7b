package repl

import (
	"errors"
	"strings"
	"testing"

	"github.com/flume-go/flume"
)

func TestDecide(t *testing.T) {
	idA, idB := flume.LogID{1}, flume.LogID{2}
	h := func(b byte) flume.Hash { return flume.Hash{b} }
	prim := func(id flume.LogID, since int64, hash flume.Hash, anchor *Position) Hello {
		return Hello{Version: Version, Role: RolePrimary, LogID: id, Since: since, Hash: hash, Anchor: anchor}
	}
	fol := func(id flume.LogID, since int64, hash flume.Hash) Hello {
		return Hello{Version: Version, Role: RoleFollower, LogID: id, Since: since, Hash: hash}
	}
	anchor := func(since int64, hash flume.Hash) *Position { return &Position{LogID: idA, Since: since, Hash: hash} }
	cases := []struct {
		name          string
		local, remote Hello
		want          Decision
		code          Code // refusal code, 0 if none
		errIs         error
	}{
		{name: "primary, empty follower, same ID", local: prim(idA, 9, h(9), nil), remote: fol(idA, -1, h(0)),
			want: Decision{Send: true, From: 0}},
		{name: "primary, empty follower adopts ID", local: prim(idA, 9, h(9), nil), remote: fol(idB, -1, h(0)),
			want: Decision{Send: true, From: 0, AdoptID: true}},
		{name: "both empty", local: prim(idA, -1, h(0), nil), remote: fol(idB, -1, h(1)),
			want: Decision{Send: true, From: 0, AdoptID: true, UpToDate: true}},
		{name: "equal: live", local: prim(idA, 9, h(9), anchor(9, h(9))), remote: fol(idA, 9, h(9)),
			want: Decision{Send: true, From: 10, UpToDate: true}},
		{name: "follower behind, same chain", local: prim(idA, 9, h(9), anchor(4, h(4))), remote: fol(idA, 4, h(4)),
			want: Decision{Send: true, From: 5}},
		{name: "follower behind, chain mismatch", local: prim(idA, 9, h(9), anchor(4, h(4))), remote: fol(idA, 4, h(44)),
			code: CodeDiverged},
		{name: "equal seq, different hash", local: prim(idA, 9, h(9), anchor(9, h(9))), remote: fol(idA, 9, h(99)),
			code: CodeDiverged},
		{name: "follower ahead", local: prim(idA, 9, h(9), nil), remote: fol(idA, 12, h(12)), code: CodeAhead},
		{name: "different log IDs", local: prim(idA, 9, h(9), anchor(4, h(4))), remote: fol(idB, 4, h(4)), code: CodeLogID},
		{name: "two primaries", local: prim(idA, 9, h(9), nil), remote: Hello{Version: Version, Role: RolePrimary, LogID: idA, Since: 3},
			code: CodeRole},
		{name: "two followers", local: fol(idA, 9, h(9)), remote: fol(idA, 3, h(3)), code: CodeRole},
		{name: "version mismatch", local: prim(idA, 9, h(9), nil), remote: Hello{Version: Version + 1, Role: RoleFollower},
			errIs: ErrVersion},
		{name: "bad position", local: prim(idA, 9, h(9), nil), remote: fol(idA, -7, h(0)), errIs: &ProtocolError{}},
		// The follower's side of the same table.
		{name: "follower: behind", local: fol(idA, 4, h(4)), remote: prim(idA, 9, h(9), nil),
			want: Decision{From: 5}},
		{name: "follower: empty adopts", local: fol(idB, -1, h(1)), remote: prim(idA, 9, h(9), nil),
			want: Decision{From: 0, AdoptID: true}},
		{name: "follower: ahead", local: fol(idA, 12, h(12)), remote: prim(idA, 9, h(9), nil), code: CodeAhead},
		{name: "follower: equal seq, different hash", local: fol(idA, 9, h(1)), remote: prim(idA, 9, h(9), nil), code: CodeDiverged},
		{name: "follower: unrelated", local: fol(idB, 3, h(3)), remote: prim(idA, 9, h(9), nil), code: CodeLogID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decide(tc.local, tc.remote)
			switch {
			case tc.code != 0:
				var re *RefusedError
				if !errors.As(err, &re) {
					t.Fatalf("got %v, %v; want refusal %s", got, err, tc.code)
				}
				if re.Reason != tc.code {
					t.Fatalf("got refusal %s, want %s", re.Reason, tc.code)
				}
				if re.Local != tc.local.Position() || re.Remote != tc.remote.Position() {
					t.Fatalf("refusal names %v / %v, want both positions", re.Local, re.Remote)
				}
				isDiv := tc.code == CodeDiverged || tc.code == CodeAhead || tc.code == CodeLogID
				if errors.Is(err, flume.ErrDiverged) != isDiv {
					t.Fatalf("errors.Is(ErrDiverged) = %v, want %v", !isDiv, isDiv)
				}
			case tc.errIs != nil:
				if pe := (*ProtocolError)(nil); errors.As(tc.errIs, &pe) {
					if !errors.As(err, &pe) || pe.Code != CodeBadPosition {
						t.Fatalf("got %v, want a bad-position protocol error", err)
					}
				} else if !errors.Is(err, tc.errIs) {
					t.Fatalf("got %v, want %v", err, tc.errIs)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
				}
			}
		})
	}
}

func TestDecideMessageNamesPositions(t *testing.T) {
	id := flume.LogID{7}
	_, err := decide(Hello{Version: Version, Role: RolePrimary, LogID: id, Since: 9}, Hello{Version: Version, Role: RoleFollower, LogID: id, Since: 12})
	for _, want := range []string{"since 9", "since 12", "follower ahead"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v does not mention %q", err, want)
		}
	}
}

func TestAuthMACBindsRoleAndNonces(t *testing.T) {
	s := []byte("secret")
	a, b := randomNonce(), randomNonce()
	base := authMAC(s, RolePrimary, a, b)
	for name, other := range map[string][macSize]byte{
		"role":    authMAC(s, RoleFollower, a, b),
		"nonces":  authMAC(s, RolePrimary, b, a),
		"secret":  authMAC([]byte("secreT"), RolePrimary, a, b),
		"fnonce":  authMAC(s, RolePrimary, randomNonce(), b),
		"pnonces": authMAC(s, RolePrimary, a, randomNonce()),
	} {
		if other == base {
			t.Errorf("changing the %s does not change the proof", name)
		}
	}
	if authMAC(s, RolePrimary, a, b) != base {
		t.Error("proof is not deterministic")
	}
}
