//go:build !linux

package redistest

import "os/exec"

// setProcAttr does nothing here: only Linux can tie a child's life to its
// parent's; the cleanups of the test stop the server.
func setProcAttr(*exec.Cmd) {}

// kill kills redis-server.
func kill(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
