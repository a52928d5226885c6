package v1alpha1

import (
	"crypto/sha256"
	"encoding/binary"

	"k8s.io/apimachinery/pkg/types"
)

// TaskIDLength is the length of a task ID.
const TaskIDLength = 10

const taskIDAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// TaskIDFromUID derives a task's short ID from its metadata.uid: TaskIDLength base62 digits of
// the first 64 bits of the UID's SHA-256. The server assigns the UID, so nobody can choose an ID
// or move one to another task; ~59.5 bits make a collision unlikely among a million tasks
// (about 1 in 10^6).
func TaskIDFromUID(uid types.UID) string {
	if uid == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(uid))
	n := binary.BigEndian.Uint64(sum[:8])
	var id [TaskIDLength]byte
	for i := TaskIDLength - 1; i >= 0; i-- {
		id[i] = taskIDAlphabet[n%62]
		n /= 62
	}
	return string(id[:])
}

// IsValidTaskID reports whether s has the form of a task ID (TaskIDLength characters of
// [0-9A-Za-z]). It says nothing about whether such a task exists.
func IsValidTaskID(s string) bool {
	if len(s) != TaskIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
