package middleware

// BackoffEntries is the number of keys whose backoff state the Gate holds,
// for the tests of its bound.
func BackoffEntries(g *Gate) int { return g.backoffs.len() }

// SubjectKeyForTest is the store key of subject's token set.
func SubjectKeyForTest(g *Gate, subject string) string { return g.users.subjectKey(subject) }

// HotEntries is the number of subjects in the Gate's hot set.
func HotEntries(g *Gate) int { return g.users.hot.len() }
