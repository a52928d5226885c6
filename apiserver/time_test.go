package apiserver

import "time"

var testutilTime = time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
