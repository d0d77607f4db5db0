package tasknationtest

// SetTestHook installs f to observe internal events ("latency-wait",
// "latency-abort"); nil removes it. Test-only.
func SetTestHook(s *Server, f func(event string)) {
	if f == nil {
		s.testHook.Store(nil)
		return
	}
	s.testHook.Store(&f)
}
