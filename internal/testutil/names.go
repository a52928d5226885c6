package testutil

import (
	"fmt"
	"regexp"
	"strings"
)

var notLabelChars = regexp.MustCompile(`[^a-z0-9-]+`)

// NamespaceName turns a test's name into a valid, unique namespace name (an RFC 1123 label):
// prefix-n-<name, lower-cased, other characters replaced by '-', cut to 63>.
func NamespaceName(prefix string, n int32, testName string) string {
	name := fmt.Sprintf("%s-%d-%s", prefix, n, notLabelChars.ReplaceAllString(strings.ToLower(testName), "-"))
	return strings.Trim(name[:min(len(name), 63)], "-")
}
