// Package lint holds repository-wide checks that run as tests (as pebble's
// internal/lint does), for rules that go vet and staticcheck cannot state.
// It has no API.
package lint
