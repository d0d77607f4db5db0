package middleware

import (
	"testing"
	"unsafe"
)

// TestHoldWriterFillsItsSizeClass: a pooled holdWriter is 128 bytes, so
// that no two share a cache line (see its pad). A field added without
// shrinking the pad fails here.
func TestHoldWriterFillsItsSizeClass(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the pad is sized for 64-bit platforms")
	}
	if got := unsafe.Sizeof(holdWriter{}); got != 128 {
		t.Fatalf("holdWriter is %d bytes, want 128: resize its pad", got)
	}
}
