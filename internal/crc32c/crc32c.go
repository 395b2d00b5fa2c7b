// Package crc32c is the one CRC-32C (Castagnoli) of the module: entry
// frames, filelog's META and index files, replication acks and views' state
// files all checksum with it. crc32.Update uses the CPU's CRC32 instruction
// (SSE 4.2, ARMv8) for this polynomial.
package crc32c

import "hash/crc32"

var table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C of b.
func Checksum(b []byte) uint32 { return crc32.Update(0, table, b) }

// Update returns the result of adding the bytes in b to crc.
func Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, table, b) }
