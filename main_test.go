package main

import "testing"

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"0":               true,
		"127.0.0.1:6060":  true,
		"[::1]:6060":      true,
		"localhost:6060":  true,
		":6060":           false, // every interface
		"0.0.0.0:6060":    false,
		"10.0.0.7:6060":   false,
		"example.com:80":  false,
		"127.0.0.1":       false, // no port
		"":                false,
		"[::1]:6060:junk": false,
	} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
