package crc32c

import "testing"

func TestCheckValue(t *testing.T) {
	// The CRC-32C check value (RFC 3720, B.4): the CRC of "123456789".
	if got, want := Checksum([]byte("123456789")), uint32(0xe3069283); got != want {
		t.Fatalf("Checksum: got %08x, want %08x", got, want)
	}
	if got, want := Update(Checksum([]byte("1234")), []byte("56789")), uint32(0xe3069283); got != want {
		t.Fatalf("Update: got %08x, want %08x", got, want)
	}
}
